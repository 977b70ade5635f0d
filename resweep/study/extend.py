"""``resweep extend DIR --seeds 3 4 / --trials N``: more seeds or samples for a study that ran.

Ray Tune cannot grow an experiment that ended (its variant generator and searcher are done,
and ``Tuner.restore`` only continues what was planned). An extension is therefore a **new
Tune experiment in the same study folder** (``tune-ext1``, ``tune-ext2``, ... beside ``tune``)
whose trials are written by the same callback into the same tables (``trials.parquet`` and
the other parts): a study is its files, not one Tune experiment.

The steps: an interrupted study is first resumed to its end (its unfinished trials continue
from their checkpoints, as ``resweep resume``); then ``study.yaml`` gets the new seeds /
``search.num_samples``; then :func:`run_missing` runs what the updated study lacks. What a
study lacks is always computed from ``study.yaml`` and the trials that ended, so a finished
trial is never rerun, and an extension killed before Tune saved anything is completed by
``resweep resume`` (or ``resweep extend DIR`` without flags).

- grid / random: the trials of the updated study whose (seed group, seed) has no ended row.
  Random draws are reproducible by the search seed, and ``num_samples`` more draws start with
  the same ones, so earlier groups keep their ids.
- Optuna, ``--trials N``: the searcher (seed groups around Optuna, the sampler with its random
  state, the in-memory or persistent Optuna study) is restored from the last experiment that
  had one and asks N more configurations; each runs on every seed of the study.
- Optuna, ``--seeds``: the configurations whose groups Optuna was told COMPLETE run on the new
  seeds, as a plain list of trials (no searcher). Optuna is **not** told again: its COMPLETE
  trials cannot change value, and adding a second trial for the same configuration would count
  it twice in TPE's density estimate. So Optuna's values stay the means over the seeds the
  sampler knew when it chose; the tables (and ``resweep report``) use every seed. Later
  ``--trials`` groups run on all seeds and are told the mean over all of them. Groups told
  FAIL or PRUNED are not rerun.

``study.json`` records each extension (``extensions``: when, what was added, which
experiments ran it) and the list of Tune experiments (``experiments``; ``resweep resume``
continues the last).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resweep.config import read_yaml
from resweep.errors import ConfigError, ResweepError
from resweep.status import Status
from resweep.study.layout import TUNE_DIR, TUNE_EXTENSION_PREFIX, StudyLayout
from resweep.study.results import count_ended, count_statuses, read_trials
from resweep.study.spec import StudyConfig, study_from_dict, study_to_yaml

EXPERIMENTS_KEY = "experiments"
EXTENSIONS_KEY = "extensions"
_ENDED = {s.value for s in Status if s.ended}


# --------------------------------------------------------------------------- study.json views
def _meta(layout: StudyLayout) -> dict[str, Any]:
    return json.loads(layout.meta.read_text()) if layout.meta.is_file() else {}


def _write_meta(layout: StudyLayout, meta: dict[str, Any]) -> None:
    from resweep.fileio import write_text_atomic

    write_text_atomic(layout.meta, json.dumps(meta, indent=2, default=str))


def experiments(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's Tune experiments, first to last (a study never extended: ``tune`` alone)."""
    return list(meta.get(EXPERIMENTS_KEY) or [{"tune_dir": TUNE_DIR, "searcher": meta.get("search", "")
                                                .startswith("optuna")}])


def current_experiment(layout: StudyLayout) -> str:
    """The Tune experiment ``resweep resume`` continues: the last one."""
    return str(experiments(_meta(layout))[-1]["tune_dir"])


def forget_last_experiment(layout: StudyLayout) -> None:
    """Drop the last experiment from study.json: it stopped before Ray Tune saved any state
    (its trials, if any started, are marked lost by the next experiment's end)."""
    meta = _meta(layout)
    runs = experiments(meta)
    if len(runs) > 1:
        meta[EXPERIMENTS_KEY] = runs[:-1]
        _write_meta(layout, meta)


def planned_trials(layout: StudyLayout, study: StudyConfig) -> int:
    """Trials the study means to have ended: its plan, or what its last extension planned."""
    from resweep.study.tuner import total_trials

    meta = _meta(layout)
    return int(meta["planned_trials"]) if meta.get(EXTENSIONS_KEY) else total_trials(study)


def _ended_keys(layout: StudyLayout) -> set[tuple[str, int]]:
    return {(str(r.get("group") or ""), int(r["seed"])) for r in read_trials(layout.root)
            if str(r.get("status")) in _ENDED}


# --------------------------------------------------------------------------- the command
def extend_study(
    study_dir: str | Path, *, seeds: Sequence[int] = (), trials: int = 0,
    address: str | None = None, quiet: bool = False, num_cpus: int | None = None,
) -> Path:
    """Add ``seeds`` and/or ``trials`` (random/Optuna samples) to a study that ran; see the
    module docstring. Returns the study folder."""
    from resweep.study.driver_lock import driver_lock
    from resweep.study.runner import resume_study

    layout = StudyLayout(Path(study_dir).resolve())
    if not layout.study_file.is_file():
        raise ResweepError(f"{layout.root} is not a study folder (no {layout.study_file.name})")
    data = read_yaml(layout.study_file)
    study = study_from_dict(data, source=str(layout.study_file))
    seeds = [int(s) for s in seeds]
    _check_request(study, seeds, trials)
    from resweep.study.preflight import preflight_study

    preflight_study(study)  # data can move between the study and its extension: say so before Ray starts

    rows = read_trials(layout.root)
    ended = count_ended(count_statuses(rows))
    if any(str(r.get("status")) not in _ENDED for r in rows) or ended < planned_trials(layout, study):
        print(f"study '{study.name}' did not end: resuming it before extending it")
        resume_study(layout.root, address=address, quiet=quiet, num_cpus=num_cpus)

    with driver_lock(layout.root):
        return _extend_locked(layout, data, study, seeds, trials, address=address, quiet=quiet, num_cpus=num_cpus)


def _extend_locked(
    layout: StudyLayout, data: dict[str, Any], study: StudyConfig, seeds: list[int], trials: int, *,
    address: str | None, quiet: bool, num_cpus: int | None,
) -> Path:
    if seeds or trials:
        data["seeds"] = [*study.seeds, *seeds]
        if trials:
            data.setdefault("search", {})["num_samples"] = study.search.num_samples + trials
        study = study_from_dict(data, source=str(layout.study_file))
        from resweep.fileio import write_text_atomic

        write_text_atomic(layout.study_file, study_to_yaml(study))
        meta = _meta(layout)
        meta["seeds"] = study.seeds
        meta.setdefault(EXTENSIONS_KEY, []).append({
            "at": time.strftime("%Y-%m-%d %H:%M:%S"), "seeds": seeds, "trials": trials, "experiments": [],
        })
        _write_meta(layout, meta)
        what = " and ".join(x for x in (f"seeds {seeds}" if seeds else "", f"{trials} trial(s)" if trials else "") if x)
        print(f"extending study '{study.name}' by {what}")
    storage = study.storage or str(layout.root)
    if not run_missing(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus, lock=False):
        print(f"study '{study.name}': nothing to run (every trial of {layout.study_file.name} has ended)")
    return layout.root


def _check_request(study: StudyConfig, seeds: list[int], trials: int) -> None:
    again = sorted(set(seeds) & set(study.seeds))
    if again:
        raise ConfigError(f"seeds {again} are already in the study (its seeds: {study.seeds})", field="seeds")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a seed", field="seeds")
    if trials < 0:
        raise ConfigError("--trials must be positive", field="search.num_samples")
    if trials and study.search.algorithm == "grid":
        raise ConfigError(
            "a grid study has no samples to add: extend it by --seeds, or start a study with a "
            "wider space and `warm_start: [this study]` (its finished trials are reused)",
            field="search.algorithm",
        )
    if (seeds or trials) and study.budget.max_trials is not None and not study.is_optuna:
        raise ConfigError(
            f"budget.max_trials ({study.budget.max_trials}) cuts this study's list of trials, and "
            "an extension would be cut by it too; remove it from study.yaml first",
            field="budget.max_trials",
        )


# --------------------------------------------------------------------------- what is missing
def run_missing(
    study: StudyConfig, layout: StudyLayout, storage: str, *,
    address: str | None, quiet: bool, num_cpus: int | None, lock: bool = True,
) -> int:
    """Run, as new Tune experiments in the study folder, every trial ``study`` plans that has
    not ended (see the module docstring). Returns how many trials were started. ``lock``:
    take the study's driver lock (False: the caller holds it)."""
    import contextlib

    from ray import tune

    from resweep.study.driver_lock import driver_lock
    from resweep.study.trial_spec import TRIAL_KEY

    started = 0
    with driver_lock(layout.root) if lock else contextlib.nullcontext():
        if not study.is_optuna:
            done = _ended_keys(layout)
            specs = [s for s in study.trial_specs() if (s.group, s.seed) not in done]
            if specs:
                search = (None, {TRIAL_KEY: tune.grid_search([s.to_payload() for s in specs])}, 1)
                started += _experiment(study, layout, storage, search, len(specs), searcher=False,
                                       address=address, quiet=quiet, num_cpus=num_cpus)
            return started
        searcher, groups_drawn = _restored_searcher(study, layout, storage)
        done = _ended_keys(layout)
        specs = [study.trial_spec(g.params, seed, group=g.group_id)
                 for g in searcher.groups.values() if g.told == "complete"
                 for seed in study.seeds if (g.group_id, seed) not in done]
        if specs:
            search = (None, {TRIAL_KEY: tune.grid_search([s.to_payload() for s in specs])}, 1)
            started += _experiment(study, layout, storage, search, len(specs), searcher=False,
                                   address=address, quiet=quiet, num_cpus=num_cpus)
        new_groups = study.search.num_samples - groups_drawn
        if new_groups > 0:
            searcher, _ = _restored_searcher(study, layout, storage)  # the seeds' experiment used none
            count = new_groups * len(study.seeds)
            started += _experiment(study, layout, storage, (searcher, None, count), count, searcher=True,
                                   address=address, quiet=quiet, num_cpus=num_cpus)
    return started


def _experiment(
    study: StudyConfig, layout: StudyLayout, storage: str, search: tuple, count: int, *,
    searcher: bool, address: str | None, quiet: bool, num_cpus: int | None,
) -> int:
    """One new Tune experiment of ``count`` trials, recorded in study.json before it starts."""
    from resweep.study.runner import _start
    from resweep.study.tuner import total_trials

    meta = _meta(layout)
    runs = experiments(meta)
    tune_dir = f"{TUNE_EXTENSION_PREFIX}{len(runs)}"
    planned = count_ended(count_statuses(read_trials(layout.root))) + count
    runs.append({"tune_dir": tune_dir, "searcher": searcher, "trials": count,
                 "at": time.strftime("%Y-%m-%d %H:%M:%S")})
    meta[EXPERIMENTS_KEY] = runs
    meta["planned_trials"] = planned
    if not study.is_optuna:
        meta["total_trials"] = total_trials(study)
    if meta.get(EXTENSIONS_KEY):
        names = meta[EXTENSIONS_KEY][-1].setdefault("experiments", [])
        if tune_dir not in names:  # (a resumed extension reuses the name of the one that died)
            names.append(tune_dir)
    _write_meta(layout, meta)
    print(f"study '{study.name}': {count} new trial(s) in experiment {tune_dir}")
    _start(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus,
           tune_dir=tune_dir, search=search, planned=planned)
    return count


# --------------------------------------------------------------------------- Optuna searcher
def _restored_searcher(study: StudyConfig, layout: StudyLayout, storage: str) -> tuple[Any, int]:
    """The study's searcher as the last experiment that had one saved it, set up for the
    updated study (its seeds; no open group). Returns (searcher, groups drawn so far)."""
    from ray.tune.utils.util import _load_newest_checkpoint

    from resweep.study.tuner import StudyResolver, searcher_and_space

    tune_dir = next(str(e["tune_dir"]) for e in reversed(experiments(_meta(layout))) if e.get("searcher"))
    searcher, _, _ = searcher_and_space(study, layout)
    with tempfile.TemporaryDirectory(prefix="resweep-searcher-") as tmp:
        _fetch_searcher_files(storage, tune_dir, Path(tmp))
        state = _load_newest_checkpoint(tmp, "search_gen_state-*.json")
        if not state or f"name:{type(searcher).__name__}" not in state:
            raise ResweepError(
                f"no saved searcher in {storage.rstrip('/')}/{tune_dir}: the Optuna study cannot "
                "continue from its stored state"
            )
        searcher.set_state(state[f"name:{type(searcher).__name__}"])
        searcher.searcher.restore_from_dir(tmp)
    searcher.seeds = list(study.seeds)
    searcher.resolve = StudyResolver(study)
    searcher.open_group = None  # the last group has all its (earlier) seeds: new ones are drawn
    return searcher, len(searcher.groups)


def _fetch_searcher_files(storage: str, tune_dir: str, into: Path) -> None:
    """Copy the searcher's checkpoint files of an experiment (local folder or s3://...)."""
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage if "://" in storage else str(Path(storage).resolve()))
    folder = f"{root.rstrip('/')}/{tune_dir}"
    for info in fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True)):
        name = info.path.rsplit("/", 1)[-1]
        if info.type == pafs.FileType.File and name.startswith(("search_gen_state-", "searcher-state-")):
            with fs.open_input_file(info.path) as src:
                (into / name).write_bytes(src.read())
