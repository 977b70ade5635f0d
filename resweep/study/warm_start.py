"""Warm start: a study begins from what earlier studies found (``warm_start:`` in the study file).

- **Optuna** (``optuna_tpe``, ``optuna_multi``): before the sampler's first ask, the earlier
  studies' seed groups whose configuration lies inside the new space are added to the new
  Optuna study as COMPLETE trials (``Study.add_trials``, with the new space's distributions),
  each marked with the user attribute :data:`WARM_ATTR` (its source). A group counts when all
  of its seeds finished; its value per objective is the mean over those seeds of each seed's
  last reported value (the rule of :mod:`resweep.study.seed_groups`). Failed, diverged and
  pruned groups are not added (TPE and NSGA-II learn from COMPLETE trials; a FAIL says nothing
  to them).
- **grid / random / variants**: a trial of the new study whose configuration already
  *finished* in a compatible earlier study is not run: its rows (trials, curves, per-image)
  are copied into the new study's tables under the earlier trial id, with the column
  :data:`REUSED_COLUMN` naming the study folder it came from.

"Compatible" (an earlier study *folder*) checks, all of them:

1. **code identity**: the earlier ``study.json`` records the same :func:`code_identity` (the
   resweep version and a SHA-256 over the source of the ``resweep`` package): results of other
   code are never reused or told;
2. **data identity**: the same identity of the base config's training and evaluation sets
   (file names, sizes, modification times; the demo photographs by scikit-image's version:
   :func:`resweep.stages.identity.dataset_identity`);
3. **the configuration**: the earlier trial's whole resolved experiment config
   (``config.*`` of ``trials.parquet``) equals the new one, the experiment ``name`` aside.
   Grid reuse compares everything else, the seed included. Optuna compares everything except
   the new space's active knobs and ``train.seed``; each active knob's value must lie inside
   its new distribution (a knob the earlier study did not search counts with its value there).

An Optuna storage URL (``sqlite:///path/optuna.db#study_name``) carries only Optuna's own
record: its COMPLETE trials are told when their parameters lie inside the new space and every
parameter the new space does not search equals the new base config's value. Code, data and
the rest of the configuration cannot be checked there: naming such a storage vouches for them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resweep.errors import ConfigError
from resweep.status import Status
from resweep.study.layout import (
    CURVES_FILE,
    IMAGES_DIR,
    META_FILE,
    PER_IMAGE_FILE,
    TRIAL_DIRS,
    TRIALS_FILE,
    StudyLayout,
    parquet_exists,
    read_parquet,
)
from resweep.study.spec import StudyConfig
from resweep.study.table_rows import _scalar, flatten

WARM_ATTR = "resweep_warm_start"  # user attribute of an Optuna trial told from an earlier study
REUSED_COLUMN = "reused_from"  # trials.parquet: the study folder a reused trial ran in
_IGNORED = ("name",)  # config paths that do not change what a trial computes
LOST_PREFIX = "lost with the driver"


# --------------------------------------------------------------------------- identity
@functools.lru_cache(maxsize=1)
def code_identity() -> dict[str, str]:
    """The resweep version and a digest of the package's Python source (any edit changes it)."""
    import resweep

    root = Path(resweep.__file__).parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(path.read_bytes())
    return {"resweep": resweep.__version__, "source_sha256": digest.hexdigest()}


def data_identity(study: StudyConfig) -> Any:
    """Identity of the base config's training and evaluation sets (JSON-able)."""
    from resweep.stages.identity import dataset_identity

    base = study.base
    try:
        found = {"train": dataset_identity(base.data.train), "eval": [dataset_identity(s) for s in base.eval.sets]}
    except (OSError, ValueError) as exc:  # data gone: nothing can match it
        return {"unreadable": str(exc)}
    return json.loads(json.dumps(found, default=str))


def study_identity(study: StudyConfig) -> dict[str, Any]:
    """What ``study.json`` records under ``identity``, and what a later warm start compares."""
    return {"code": code_identity(), "data": data_identity(study)}


# --------------------------------------------------------------------------- sources
@dataclass
class Source:
    """One entry of ``warm_start``: a study folder's finished trials, or an Optuna storage."""

    name: str
    folder: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    incompatible: str | None = None  # why nothing of it may be used


def load_source(entry: str, index: int, study: StudyConfig) -> Source:
    if "://" in entry:
        return Source(name=entry)
    folder = Path(entry).expanduser().resolve()
    layout = StudyLayout(folder)
    if not layout.meta.is_file() or not parquet_exists(layout.trials):
        raise ConfigError(f"'{entry}' is not a study folder with results ({META_FILE}, {TRIALS_FILE})",
                          field=f"warm_start[{index}]")
    meta = json.loads(layout.meta.read_text())
    rows = [r for r in read_parquet(layout.trials).to_pylist()
            if not str(r.get("error") or "").startswith(LOST_PREFIX)]
    source = Source(name=str(folder), folder=folder, meta=meta, rows=rows)
    identity = meta.get("identity") or {}
    if identity.get("code") != code_identity():
        source.incompatible = "other code (code identity differs or was not recorded)"
    elif identity.get("data") != data_identity(study):
        source.incompatible = "other data (the base config's data sets differ)"
    return source


def _config(row: dict[str, Any]) -> dict[str, Any]:
    return {k[7:]: v for k, v in row.items() if k.startswith("config.") and v is not None
            and k[7:] not in _IGNORED}


def _spec_config(experiment: dict[str, Any]) -> dict[str, Any]:
    return {k: _scalar(v) for k, v in flatten(experiment).items() if v is not None and k not in _IGNORED}


def _under(key: str, paths: set[str]) -> bool:
    return key in paths or any(key.startswith(p + ".") for p in paths)


def _same(a: dict[str, Any], b: dict[str, Any], skip: set[str] = frozenset()) -> bool:  # type: ignore[assignment]
    keys = {k for k in (*a, *b) if not _under(k, skip)}
    return all(a.get(k) == b.get(k) for k in keys)


def _record(layout: StudyLayout, key: str, value: Any) -> None:
    from resweep.fileio import write_text_atomic

    meta = json.loads(layout.meta.read_text()) if layout.meta.is_file() else {}
    meta[key] = value
    write_text_atomic(layout.meta, json.dumps(meta, indent=2, default=str))


# --------------------------------------------------------------------------- entry point
def apply_warm_start(study: StudyConfig, layout: StudyLayout, search: tuple[Any, dict | None, int]
                     ) -> tuple[Any, dict | None, int] | None:
    """The first experiment's ``(search_alg, param_space, num_samples)`` after the warm start;
    ``None`` when every trial was reused (nothing left to run)."""
    if not study.warm_start:
        return search
    sources = [load_source(entry, i, study) for i, entry in enumerate(study.warm_start)]
    for source in sources:
        if source.incompatible:
            print(f"warm start: nothing used from {source.name}: {source.incompatible}")
    if study.is_optuna:
        told = tell_optuna(search[0].searcher._ot_study, study, sources)
        _record(layout, "warm_start", {"optuna_told": told})
        print("warm start: Optuna told " + ", ".join(f"{n} result(s) of {s}" for s, n in told.items()))
        return search
    from ray import tune

    from resweep.study.trial_spec import TRIAL_KEY

    remaining, reused = reuse_finished(study, layout, sources)
    _record(layout, "warm_start", {"reused": reused})
    print(f"warm start: {sum(reused.values())} trial(s) reused, {len(remaining)} to run")
    if not remaining:
        return None
    return None, {TRIAL_KEY: tune.grid_search([s.to_payload() for s in remaining])}, 1


# --------------------------------------------------------------------------- grid / random
def reuse_finished(study: StudyConfig, layout: StudyLayout, sources: list[Source]) -> tuple[list, dict[str, int]]:
    """Copy finished trials of compatible sources whose configuration a trial of ``study`` has;
    returns (the trial specs still to run, source -> trials reused)."""
    finished: dict[str, tuple[Source, dict[str, Any]]] = {}
    for source in sources:
        if source.folder is None or source.incompatible:
            continue
        for row in source.rows:
            if row.get("status") == Status.FINISHED.value:
                key = json.dumps(_config(row), sort_keys=True, default=str)
                finished.setdefault(key, (source, row))
    have = {str(r["trial_id"]) for r in read_parquet(layout.trials, columns=["trial_id"]).to_pylist()
            } if parquet_exists(layout.trials) else set()
    remaining, picked = [], []
    for spec in study.trial_specs():
        match = finished.get(json.dumps(_spec_config(spec.experiment), sort_keys=True, default=str))
        if match is None:
            remaining.append(spec)
        else:
            picked.append((spec, *match))
    reused: dict[str, int] = {}
    by_source: dict[str, list] = {}
    for spec, source, row in picked:
        reused[source.name] = reused.get(source.name, 0) + 1
        if str(row["trial_id"]) not in have:  # idempotent: a rerun of `resweep run` copies nothing twice
            by_source.setdefault(source.name, []).append((spec, source, row))
    for items in by_source.values():
        _copy_trials(layout, items)
    return remaining, reused


def _copy_trials(layout: StudyLayout, items: list) -> None:
    """The rows of reused trials as one new chunk per dataset, their logs and images beside."""
    from resweep.study.parts import next_chunk, write_chunk
    from resweep.study.table_rows import rows_to_table

    source: Source = items[0][1]
    ids = {str(row["trial_id"]) for _, _, row in items}
    rows = []
    for spec, _, row in items:
        row = {k: v for k, v in row.items() if not k.startswith("param.")}
        row.update({"label": spec.label, "group": spec.group, REUSED_COLUMN: source.name,
                    **{f"param.{k}": _scalar(v) for k, v in spec.params.items()}})
        rows.append(row)
    tables = {TRIALS_FILE: rows_to_table(rows)}
    for name in (CURVES_FILE, PER_IMAGE_FILE):
        path = source.folder / name  # type: ignore[operator]
        if parquet_exists(path):
            tables[name] = read_parquet(path, trial_ids=ids)
    for name, table in tables.items():
        if table.num_rows:
            folder = layout.root / name
            folder.mkdir(parents=True, exist_ok=True)
            write_chunk(folder, table, next_chunk(folder))
    for sub in (TRIAL_DIRS, IMAGES_DIR):
        for tid in ids:
            src = source.folder / sub / tid  # type: ignore[operator]
            if src.is_dir():
                shutil.copytree(src, layout.root / sub / tid, dirs_exist_ok=True)


# --------------------------------------------------------------------------- Optuna
def _distribution(dist: Any) -> Any:
    """The Optuna distribution resweep's define-by-run space suggests for a knob."""
    import optuna.distributions as od

    from resweep.search_spaces import IntRange, LogUniform, Uniform, _encode_choice, _Values

    if isinstance(dist, _Values):
        return od.CategoricalDistribution([_encode_choice(v) for v in dist.values])
    if isinstance(dist, Uniform):
        return od.FloatDistribution(dist.low, dist.high)
    if isinstance(dist, LogUniform):
        return od.FloatDistribution(dist.low, dist.high, log=True)
    assert isinstance(dist, IntRange)
    return od.IntDistribution(dist.low, dist.high, step=dist.step, log=dist.log)


def _inside(dist: Any, value: Any) -> tuple[Any, Any] | None:
    """(the knob's value, as Optuna holds it) when a stored value lies in the knob's
    distribution, else None."""
    from resweep.search_spaces import IntRange, _encode_choice, _Values

    if isinstance(dist, _Values):
        for v in dist.values:
            if v == value or _scalar(v) == value:
                return v, _encode_choice(v)
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        return None
    if isinstance(dist, IntRange):
        if float(value) != int(value):
            return None
        value = int(value)
    optuna_dist = _distribution(dist)
    return (value, value) if optuna_dist._contains(optuna_dist.to_internal_repr(value)) else None


def place_in_space(study: StudyConfig, values: dict[str, Any]) -> tuple[dict, dict] | None:
    """(params, distributions) of a configuration given by its values at config paths (a
    knob missing from ``values`` takes the new base's value), or None when one lies outside."""
    from resweep.config import get_dotted
    from resweep.search_spaces import condition_holds

    base = study.base.to_dict()
    drawn: dict[str, Any] = {}
    params, dists = {}, {}
    for path, dist in study.space.items():
        if not condition_holds(dist, drawn, base):
            continue
        value = values[path] if path in values else _scalar(get_dotted(base, path))
        found = _inside(dist, value)
        if found is None:
            return None
        drawn[path], params[path] = found
        dists[path] = _distribution(dist)
    return params, dists


def _folder_trials(study: StudyConfig, source: Source) -> list[tuple[dict, dict, list[float], str]]:
    """(params, distributions, values, group) of a folder's finished seed groups inside the space."""
    metrics = [o.metric for o in study.objectives]
    seeds = list(source.meta.get("seeds") or [])
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in source.rows:
        groups.setdefault(str(row.get("group") or row["trial_id"]), []).append(row)
    new_base = _spec_config(study.base.to_dict())
    out = []
    for group, rows in groups.items():
        if any(r.get("status") != Status.FINISHED.value for r in rows):
            continue
        if seeds and sorted(int(r["seed"]) for r in rows) != sorted(seeds):
            continue  # a group not run on every seed of its study: no mean to tell
        finals = [[r.get(f"final.{m}") for r in rows] for m in metrics]
        if any(not isinstance(v, int | float) or not math.isfinite(v) for vs in finals for v in vs):
            continue
        config = _config(rows[0])
        placed = place_in_space(study, config)
        if placed is None:
            continue
        active = set(placed[0]) | {"train.seed"}
        if not _same(config, new_base, active):
            continue  # differs from the new base in something the new study holds fixed
        out.append((*placed, [sum(vs) / len(vs) for vs in finals], group))
    return out


def _storage_trials(study: StudyConfig, source: Source) -> list[tuple[dict, dict, list[float], str]]:
    import optuna
    from optuna.trial import TrialState

    from resweep.config import get_dotted

    url, _, name = source.name.partition("#")
    old = optuna.load_study(study_name=name or None, storage=url)
    base = study.base.to_dict()
    out = []
    for trial in old.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if WARM_ATTR in trial.user_attrs or len(trial.values) != len(study.objectives):
            continue
        values = {k: _scalar(v) for k, v in trial.params.items()}
        placed = place_in_space(study, values)
        if placed is None or any(k not in placed[0] and v != _scalar(get_dotted(base, k))
                                 for k, v in values.items()):
            continue
        out.append((*placed, list(trial.values), str(trial.number)))
    return out


def tell_optuna(ot_study: Any, study: StudyConfig, sources: list[Source]) -> dict[str, int]:
    """Add the sources' results to ``ot_study`` as COMPLETE trials (once: a study that already
    holds warm-start trials, e.g. a sqlite storage reused by a restart, gets none again).
    Returns source -> trials told."""
    import optuna

    told = {s.name: 0 for s in sources}
    if any(WARM_ATTR in t.user_attrs for t in ot_study.get_trials(deepcopy=False)):
        return told
    frozen = []
    for source in sources:
        if source.incompatible:
            continue
        found = _storage_trials(study, source) if source.folder is None else _folder_trials(study, source)
        for params, dists, values, group in found:
            frozen.append(optuna.trial.create_trial(
                params=params, distributions=dists, values=values,
                user_attrs={WARM_ATTR: source.name, "warm_start_group": group},
            ))
        told[source.name] = len(found)
    ot_study.add_trials(frozen)
    return told
