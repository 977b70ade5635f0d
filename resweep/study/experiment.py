"""One Ray Tune experiment of a study: its stages made, its callbacks (the study's files, the
trackers, the storage mirror), its Tuner fitted and the outcome said. ``runner`` starts the
first experiment of a study and resumes it; ``extension_runs`` starts the experiments of
``resweep extend``."""

from __future__ import annotations

import logging
import sys
from typing import Any

from resweep.config import ExperimentConfig
from resweep.study.layout import (
    CURVES_FILE,
    PER_IMAGE_FILE,
    TRIAL_DIRS,
    TRIALS_FILE,
    TUNE_DIR,
    StudyLayout,
)
from resweep.study.results import count_ended, count_statuses, read_trials
from resweep.study.spec import StudyConfig
from resweep.trainables.runtime import init_ray
from resweep.uri import is_uri


class _TrialErrorsFilter(logging.Filter):
    """Tune logs each failed trial with Ray's full traceback; our callback prints one line and
    the path of the trial's log instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith((
            "Trial task failed", "Failure # ", "Trials did not complete",
            "Experiment has been interrupted",  # we say how to resume with resweep's command
        ))


def study_callback(study: StudyConfig, layout: StudyLayout, quiet: bool, storage: str,
              artifact_keys: dict[str, str], total: int) -> Any:
    from resweep.study.callback import StudyCallback

    return StudyCallback(
        study_dir=layout.root, name=study.name, objective=study.primary.metric, mode=study.primary.mode,
        total_trials=total, quiet=quiet, storage=storage, artifact_keys=artifact_keys,
    )


def prepare_study_stages(study: StudyConfig, layout: StudyLayout, storage: str) -> dict[str, str]:
    """Stages: make the artifacts the trials need (each once, as Ray tasks) before any trial
    starts; a finished artifact is reused (also on resume). Returns definition digest -> key."""
    from resweep.stages import study_keys
    from resweep.stages.on_ray import prepare_stages
    from resweep.study.layout import STAGE_KEYS_FILE

    # computed once and saved with the study: a resume (and every trial) reuses these keys
    keys = study_keys.StudyStageKeys(layout.root / STAGE_KEYS_FILE)
    study_keys.activate(keys)  # the Optuna resolver gives each sampled trial its keys from it
    if study.is_optuna:  # Optuna samples at run time: the base config's stages here (per seed, for
        # `seed: trial` stages), the stages of sampled knobs in the trial
        experiments = [study.experiment_for({}, seed) for seed in study.seeds]
    else:
        experiments = [ExperimentConfig.from_dict(spec.experiment) for spec in study.trial_specs()]
    r = study.resources
    prepared = prepare_stages(experiments, storage, layout.root, cpus=r.cpus_per_worker, gpus=r.gpus_per_worker,
                              keys=keys)
    return dict(prepared.keys)


def fit_study(tuner: Any, layout: StudyLayout, planned: int) -> None:
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


def start_experiment(
    study: StudyConfig, layout: StudyLayout, storage: str, *,
    address: str | None, quiet: bool, num_cpus: int | None,
    tune_dir: str = TUNE_DIR, search: tuple[Any, dict | None, int] | None = None,
    planned: int | None = None,
) -> None:
    """A new Tune experiment for the study (its folder prepared, its driver lock held).

    ``tune_dir``, ``search``, ``planned``: an extension's own experiment, trials and the
    study's total after it (resweep.study.extend); without them, the study's first
    experiment, warm-started from ``study.warm_start`` (resweep.study.warm_start)."""
    import ray

    from resweep.study.tuner import build_tuner, check_trial_fits, searcher_and_space, total_trials
    from resweep.study.warm_start import apply_warm_start

    planned = total_trials(study) if planned is None else planned
    if search is None:
        search = apply_warm_start(study, layout, searcher_and_space(study, layout))
        if search is None:  # every trial reused from earlier studies: nothing to run
            print(f"study '{study.name}': all {planned} trials reused from earlier studies; folder {layout.root}")
            mirror = mirror_callback(layout, storage)
            if mirror is not None:
                mirror.close()  # one sync: the storage gets the folder
            return
    # an embedded local Ray that this driver starts never grows; a cluster it joins may
    embedded = address is None and not ray.is_initialized()
    init_ray(address, num_cpus=num_cpus)
    check_trial_fits(study, fixed=embedded)
    artifact_keys = prepare_study_stages(study, layout, storage)
    callback = study_callback(study, layout, quiet, storage, artifact_keys, planned)
    mirror = mirror_callback(layout, storage)
    from resweep.study.tracking import tracking_callbacks

    # after the study's own callback: the trackers read the row it wrote for an ended trial
    callbacks = [callback, *tracking_callbacks(study, layout), *([mirror] if mirror else [])]
    tuner = build_tuner(study, layout, storage, callbacks, artifact_keys, name=tune_dir, search=search)
    print(f"study '{study.name}': {planned} trials; folder {layout.root}")
    fit_and_mirror(tuner, layout, planned, mirror)


def mirror_callback(layout: StudyLayout, storage: str) -> Any:
    """With a remote storage (s3://...), the callback that mirrors the study folder there."""
    if not is_uri(storage):
        return None  # a local storage is the study folder itself
    from resweep.study.mirror_callback import MirrorCallback

    return MirrorCallback(layout.root, storage)


def fit_and_mirror(tuner: Any, layout: StudyLayout, planned: int, mirror: Any) -> None:
    try:
        fit_study(tuner, layout, planned)
    finally:  # also when stopped: the storage gets everything the folder has
        if mirror is not None:
            mirror.close()
