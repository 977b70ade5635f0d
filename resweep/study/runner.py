"""Running and resuming a study: prepare its folder, start Ray, fit the Tuner, say where the
results are. The Tuner's parts are in ``tuner``, the driver callback in ``callback``."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from resweep.config import ExperimentConfig
from resweep.errors import ResweepError
from resweep.study.driver_lock import driver_lock
from resweep.study.layout import (
    ARTIFACTS_FILE,
    CURVES_FILE,
    META_FILE,
    PER_IMAGE_FILE,
    STUDY_FILE,
    TRIAL_DIRS,
    TRIALS_FILE,
    TUNE_DIR,
    StudyLayout,
)
from resweep.study.results import StudyResults, count_ended, count_statuses, read_trials
from resweep.study.spec import StudyConfig, load_study, study_from_dict, study_to_yaml
from resweep.trainables.runtime import init_ray


def default_study_dir(study: StudyConfig) -> Path:
    return Path("studies") / study.name


def _prepare_dir(study: StudyConfig, layout: StudyLayout, source: str | None) -> str:
    from resweep.fileio import write_text_atomic

    layout.root.mkdir(parents=True, exist_ok=True)
    write_text_atomic(layout.study_file, study_to_yaml(study))
    from resweep.study.tuner import total_trials

    meta = {
        "name": study.name,
        "description": study.description,
        "source": source,
        "knobs": study.knobs,
        "seeds": study.seeds,
        "objectives": [o.model_dump() for o in study.objectives],
        "baseline": study.baseline,
        "variants": [v.label for v in study.variants],
        "paper": study.paper.model_dump() if study.paper else None,
        "iterations": study.base.train.iterations,
        "total_trials": None if study.is_optuna else total_trials(study),
        "planned_trials": total_trials(study),
        "search": study.search.algorithm,
        "task": study.base.task.model_dump(mode="json"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    StudyResults(layout.root, meta=meta).write_meta()
    return study.storage or str(layout.root.resolve())


def _callback(study: StudyConfig, layout: StudyLayout, quiet: bool, storage: str, artifact_keys: dict[str, str]) -> Any:
    from resweep.study.callback import StudyCallback
    from resweep.study.tuner import total_trials

    return StudyCallback(
        study_dir=layout.root, name=study.name, objective=study.primary.metric, mode=study.primary.mode,
        total_trials=total_trials(study), quiet=quiet, storage=storage, artifact_keys=artifact_keys,
    )


def _prepare_stages(study: StudyConfig, layout: StudyLayout, storage: str) -> dict[str, str]:
    """Stages: make the artifacts the trials need (each once, as Ray tasks) before any trial
    starts; a finished artifact is reused (also on resume). Returns definition digest -> key."""
    from resweep.stages.on_ray import prepare_stages

    if study.is_optuna:  # Optuna samples at run time: the base config's stages here (per seed, for
        # `seed: trial` stages), the stages of sampled knobs in the trial
        experiments = [study.experiment_for({}, seed) for seed in study.seeds]
    else:
        experiments = [ExperimentConfig.from_dict(spec.experiment) for spec in study.trial_specs()]
    r = study.resources
    prepared = prepare_stages(experiments, storage, layout.root, cpus=r.cpus_per_worker, gpus=r.gpus_per_worker)
    return dict(prepared.keys)


class _TrialErrorsFilter(logging.Filter):
    """Tune logs each failed trial with Ray's full traceback; our callback prints one line and
    the path of the trial's log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith((
            "Trial task failed", "Failure # ", "Trials did not complete",
            "Experiment has been interrupted",  # we say how to resume with resweep's command
        ))


def _fit(tuner: Any, layout: StudyLayout, planned: int) -> None:
    quiet_filter = _TrialErrorsFilter()
    # a logger's filter sees only its own records, not its children's: name each one
    ray_loggers = [logging.getLogger(name) for name in (
        "ray.tune", "ray.tune.tune", "ray.tune.execution.tune_controller",
    )]
    for lg in ray_loggers:
        lg.addFilter(quiet_filter)
    try:
        results = tuner.fit()
    finally:
        for lg in ray_loggers:
            lg.removeFilter(quiet_filter)
    errors = [r for r in results if r.error]
    counts = count_statuses(read_trials(layout.root))
    ended = count_ended(counts)
    summary = (f"{counts['finished']} finished, {counts['pruned']} pruned, "
               f"{counts['diverged']} diverged, {counts['errored']} errored")
    if ended < planned:  # stopped (Ctrl+C, SIGTERM, budget.time_limit_s) before every trial ended
        print(f"\nstudy stopped early: {ended} of {planned} trials ended ({summary}); "
              f"continue it with `resweep resume {layout.root}`")
    else:
        print(f"\nstudy done: {summary}")
    print(f"results: {layout.root}  ({TRIALS_FILE}, {CURVES_FILE}/, {PER_IMAGE_FILE}/, {TRIAL_DIRS}/<id>/log.txt)")
    if errors:
        print(f"{len(errors)} trial(s) errored; see `resweep status {layout.root}` and "
              f"`resweep logs {layout.root} TRIAL_ID`", file=sys.stderr)


def run_study(
    study: StudyConfig | str | Path,
    *,
    study_dir: str | Path | None = None,
    address: str | None = None,
    fresh: bool = False,
    quiet: bool = False,
    num_cpus: int | None = None,
    source: str | None = None,
) -> Path:
    """Run a study to completion (or resume it if its folder already holds one)."""
    if not isinstance(study, StudyConfig):
        source = str(study)
        study = load_study(study)
    layout = StudyLayout(Path(study_dir or default_study_dir(study)).resolve())
    if layout.tune.exists():
        if fresh:
            raise ResweepError(f"{layout.root} already holds a study; remove it or drop --fresh")
        print(f"{layout.root} already holds this study: resuming it")
        return resume_study(layout.root, address=address, quiet=quiet, num_cpus=num_cpus)

    from resweep.study.preflight import preflight_study

    preflight_study(study)  # bad data or files of any configuration fail here, before Ray starts
    with driver_lock(layout.root):
        storage = _prepare_dir(study, layout, source)
        _start(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus)
    return layout.root


def _start(
    study: StudyConfig, layout: StudyLayout, storage: str, *,
    address: str | None, quiet: bool, num_cpus: int | None,
) -> None:
    """A new Tune experiment for the study (its folder prepared, its driver lock held)."""
    import ray

    from resweep.study.tuner import build_tuner, check_trial_fits, total_trials

    # an embedded local Ray that this driver starts never grows; a cluster it joins may
    embedded = address is None and not ray.is_initialized()
    init_ray(address, num_cpus=num_cpus)
    check_trial_fits(study, fixed=embedded)
    artifact_keys = _prepare_stages(study, layout, storage)
    callback = _callback(study, layout, quiet, storage, artifact_keys)
    from resweep.study.tracking import tracking_callbacks

    # after the study's own callback: the trackers read the row it wrote for an ended trial
    callbacks = [callback, *tracking_callbacks(study, layout)]
    tuner = build_tuner(study, layout, storage, callbacks, artifact_keys)
    print(f"study '{study.name}': {total_trials(study)} trials; folder {layout.root}")
    _fit(tuner, layout, total_trials(study))
    _mirror_results(layout, storage)


def resume_study(
    study_dir: str | Path, *, address: str | None = None, quiet: bool = False, num_cpus: int | None = None
) -> Path:
    """Continue an interrupted study: finished trials are kept, unfinished ones continue from
    their last checkpoint, errored ones are not rerun."""
    from ray import tune

    from resweep.config import read_yaml
    from resweep.study.tuner import restore_tuner, total_trials

    layout = StudyLayout(Path(study_dir).resolve())
    if not layout.study_file.is_file():
        raise ResweepError(f"{layout.root} is not a study folder (no {STUDY_FILE})")
    study = study_from_dict(read_yaml(layout.study_file), source=str(layout.study_file))
    from resweep.study.preflight import preflight_study

    # data can move or vanish between the stop and the resume: say so before Ray starts
    preflight_study(study)
    storage = study.storage or str(layout.root)
    tune_path = storage.rstrip("/") + "/" + TUNE_DIR
    with driver_lock(layout.root):
        init_ray(address, num_cpus=num_cpus)
        if not tune.Tuner.can_restore(tune_path):
            ended = count_ended(count_statuses(read_trials(layout.root)))
            if ended:
                raise ResweepError(
                    f"no Ray Tune state to resume in {tune_path}, but {ended} trial(s) of the study "
                    "ended: its Tune folder was removed or never reached this storage"
                )
            # killed before Tune's first experiment checkpoint: nothing can have ended, so the
            # study simply starts (a trial that had started is marked lost at the end)
            print(f"study '{study.name}' stopped before Ray Tune saved any state: starting it")
            _start(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus)
            return layout.root
        artifact_keys = _prepare_stages(study, layout, storage)  # finished artifacts are reused
        tuner = restore_tuner(study, layout, storage, tune_path, artifact_keys)
        print(f"resuming study '{study.name}' in {layout.root}")
        _fit(tuner, layout, total_trials(study))
        _mirror_results(layout, storage)
    return layout.root


def _mirror_results(layout: StudyLayout, storage: str) -> None:
    """With remote storage (s3://...), copy the study's own files next to Ray's results."""
    if "://" not in storage:
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage)
    local = pafs.LocalFileSystem()
    for name in (TRIALS_FILE, CURVES_FILE, PER_IMAGE_FILE, ARTIFACTS_FILE, META_FILE, STUDY_FILE, TRIAL_DIRS):
        src = layout.root / name
        if src.exists():
            pafs.copy_files(str(src), f"{root}/{name}", source_filesystem=local, destination_filesystem=fs)


def print_status(study_dir: str | Path) -> None:  # kept for callers of the old location
    from resweep.study.status_view import print_status as _print_status

    _print_status(study_dir)
