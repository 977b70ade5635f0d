"""The Tune experiments of a study and what an extension still has to run (see
:mod:`resweep.study.extend`, the command, for the rules): ``study.json``'s list of
experiments, the trials the study plans, and :func:`run_missing`, which starts new experiments
(``tune-ext1``, ...) for the trials of ``study.yaml`` that have not ended."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from resweep.errors import ResweepError
from resweep.status import Status
from resweep.study.experiment import start_experiment
from resweep.study.layout import TUNE_DIR, TUNE_EXTENSION_PREFIX, StudyLayout
from resweep.study.results import count_ended, count_statuses, read_trials
from resweep.study.spec import StudyConfig

EXPERIMENTS_KEY = "experiments"
EXTENSIONS_KEY = "extensions"
ENDED_STATUSES = {s.value for s in Status if s.ended}


# --------------------------------------------------------------------------- study.json views
def read_meta(layout: StudyLayout) -> dict[str, Any]:
    return json.loads(layout.meta.read_text()) if layout.meta.is_file() else {}


def write_meta(layout: StudyLayout, meta: dict[str, Any]) -> None:
    from resweep.fileio import write_text_atomic

    write_text_atomic(layout.meta, json.dumps(meta, indent=2, default=str))


def experiments(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The study's Tune experiments, first to last (a study never extended: ``tune`` alone)."""
    return list(meta.get(EXPERIMENTS_KEY) or [{"tune_dir": TUNE_DIR, "searcher": meta.get("search", "")
                                                .startswith("optuna")}])


def current_experiment(layout: StudyLayout) -> str:
    """The Tune experiment ``resweep resume`` continues: the last one."""
    return str(experiments(read_meta(layout))[-1]["tune_dir"])


def forget_last_experiment(layout: StudyLayout) -> None:
    """Drop the last experiment from study.json: it stopped before Ray Tune saved any state
    (its trials, if any started, are marked lost by the next experiment's end)."""
    meta = read_meta(layout)
    runs = experiments(meta)
    if len(runs) > 1:
        meta[EXPERIMENTS_KEY] = runs[:-1]
        write_meta(layout, meta)


def planned_trials(layout: StudyLayout, study: StudyConfig) -> int:
    """Trials the study means to have ended: its plan, or what its last extension planned."""
    from resweep.study.tuner import total_trials

    meta = read_meta(layout)
    return int(meta["planned_trials"]) if meta.get(EXTENSIONS_KEY) else total_trials(study)


def _ended_keys(layout: StudyLayout) -> set[tuple[str, int]]:
    return {(str(r.get("group") or ""), int(r["seed"])) for r in read_trials(layout.root)
            if str(r.get("status")) in ENDED_STATUSES}


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
    from resweep.study.tuner import total_trials

    meta = read_meta(layout)
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
    write_meta(layout, meta)
    print(f"study '{study.name}': {count} new trial(s) in experiment {tune_dir}")
    start_experiment(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus,
                     tune_dir=tune_dir, search=search, planned=planned)
    return count


# --------------------------------------------------------------------------- Optuna searcher
def _restored_searcher(study: StudyConfig, layout: StudyLayout, storage: str) -> tuple[Any, int]:
    """The study's searcher as the last experiment that had one saved it, set up for the
    updated study (its seeds; no open group). Returns (searcher, groups drawn so far)."""
    from ray.tune.utils.util import _load_newest_checkpoint

    from resweep.study.tuner import StudyResolver, searcher_and_space

    tune_dir = next(str(e["tune_dir"]) for e in reversed(experiments(read_meta(layout))) if e.get("searcher"))
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
