"""Running and resuming a study: prepare its folder, start Ray, fit the Tuner, say where the
results are. The Tuner's parts are in ``tuner``, the driver callback in ``callback``."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from resweep.errors import ResweepError
from resweep.study.driver_lock import driver_lock
from resweep.study.experiment import (
    fit_and_mirror,
    mirror_callback,
    prepare_study_stages,
    start_experiment,
)
from resweep.study.layout import (
    STUDY_FILE,
    TUNE_DIR,
    StudyLayout,
)
from resweep.study.results import StudyResults, count_ended, count_statuses, read_trials
from resweep.study.spec import StudyConfig, load_study, study_from_dict, study_to_yaml
from resweep.study.warm_start import study_identity
from resweep.trainables.runtime import init_ray
from resweep.uri import is_uri, join_uri


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
        "identity": study_identity(study),  # code and data: what a warm start checks
    }
    StudyResults(layout.root, meta=meta).write_meta()
    return study.storage or str(layout.root.resolve())


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
    storage = study.storage or str(layout.root)
    if layout.tune.exists() or (is_uri(storage) and _tune_state_at(storage)):
        if fresh:
            raise ResweepError(f"{layout.root} (storage {storage}) already holds a study; remove it or drop --fresh")
        if layout.study_file.is_file():
            print(f"{layout.root} already holds this study: resuming it")
            return resume_study(layout.root, address=address, quiet=quiet, num_cpus=num_cpus)
        # another machine ran it: its storage holds the study's mirror and Tune's state
        print(f"{storage} already holds this study: resuming it from there")
        return resume_study(storage, address=address, quiet=quiet, num_cpus=num_cpus, local_dir=layout.root)

    from resweep.study.preflight import preflight_study

    preflight_study(study)  # bad data or files of any configuration fail here, before Ray starts
    with driver_lock(layout.root):
        storage = _prepare_dir(study, layout, source)
        start_experiment(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus)
    return layout.root


def resume_study(
    study_dir: str | Path, *, address: str | None = None, quiet: bool = False, num_cpus: int | None = None,
    local_dir: str | Path | None = None,
) -> Path:
    """Continue an interrupted study: finished trials are kept, unfinished ones continue from
    their last checkpoint, errored ones are not rerun.

    ``study_dir`` may be the study's remote storage (``s3://bucket/studies/NAME``): its mirrored
    folder is fetched into ``local_dir`` (default ``studies/<name>``, which must not hold a
    study yet) and the study continues from Tune's state in that storage."""
    from ray import tune

    from resweep.config import read_yaml
    from resweep.study.extension_runs import current_experiment, planned_trials
    from resweep.study.tuner import restore_tuner

    storage_uri = None
    if is_uri(study_dir):
        storage_uri = str(study_dir)
        study_dir = _fetch_for_resume(storage_uri, local_dir)
    layout = StudyLayout(Path(study_dir).resolve())
    if not layout.study_file.is_file():
        raise ResweepError(f"{layout.root} is not a study folder (no {STUDY_FILE})")
    study = study_from_dict(read_yaml(layout.study_file), source=str(layout.study_file))
    from resweep.study.preflight import preflight_study

    # data can move or vanish between the stop and the resume: say so before Ray starts
    preflight_study(study)
    storage = storage_uri or study.storage or str(layout.root)
    tune_dir = current_experiment(layout)  # the last `resweep extend` runs in its own experiment
    tune_path = join_uri(storage, tune_dir)
    planned = planned_trials(layout, study)
    with driver_lock(layout.root):
        init_ray(address, num_cpus=num_cpus)
        if not tune.Tuner.can_restore(tune_path):
            ended = count_ended(count_statuses(read_trials(layout.root)))
            if tune_dir != TUNE_DIR:  # an extension killed before its first Tune checkpoint
                from resweep.study.extension_runs import forget_last_experiment, run_missing

                forget_last_experiment(layout)
                print(f"study '{study.name}': its extension stopped before Ray Tune saved any state: "
                      "running what it still lacks")
                run_missing(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus, lock=False)
                return layout.root
            if ended >= planned:  # e.g. every trial reused by a warm start: no Tune experiment
                print(f"study '{study.name}': all {planned} planned trials have ended; nothing to resume")
                return layout.root
            if ended:
                raise ResweepError(
                    f"no Ray Tune state to resume in {tune_path}, but {ended} trial(s) of the study "
                    "ended: its Tune folder was removed or never reached this storage"
                )
            # killed before Tune's first experiment checkpoint: nothing can have ended, so the
            # study simply starts (a trial that had started is marked lost at the end)
            print(f"study '{study.name}' stopped before Ray Tune saved any state: starting it")
            start_experiment(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus)
            return layout.root
        artifact_keys = prepare_study_stages(study, layout, storage)  # finished artifacts are reused
        tuner = restore_tuner(study, layout, storage, tune_path, artifact_keys)
        mirror = mirror_callback(layout, storage)
        _rebind_callbacks(tuner, layout, mirror)
        print(f"resuming study '{study.name}' in {layout.root}")
        fit_and_mirror(tuner, layout, planned, mirror)
    return layout.root


def _tune_state_at(storage: str) -> bool:
    from ray import tune

    return bool(tune.Tuner.can_restore(join_uri(storage, TUNE_DIR)))


def _fetch_for_resume(uri: str, local_dir: str | Path | None) -> Path:
    """The study folder mirrored at ``uri`` fetched into a new local folder."""
    import yaml

    from resweep.study.mirror import fetch_study, read_remote_text

    source = join_uri(uri, STUDY_FILE)
    try:
        study = study_from_dict(yaml.safe_load(read_remote_text(uri, STUDY_FILE)), source=source)
    except yaml.YAMLError as exc:
        raise ResweepError(f"{source} cannot be read: {exc}") from None
    dest = Path(local_dir or default_study_dir(study)).resolve()
    if (dest / STUDY_FILE).is_file():
        raise ResweepError(
            f"{dest} already holds study '{study.name}': resume that copy with `resweep resume {dest}`, "
            f"or move it away to resume from {uri} (or pass --dir for another folder)"
        )
    print(f"fetching study '{study.name}' from {uri} into {dest}")
    return fetch_study(uri, dest)


def _rebind_callbacks(tuner: Any, layout: StudyLayout, mirror: Any) -> None:
    """Tune restores the callbacks it pickled with the run: the study's callback and the trackers get this
    driver's study folder (another machine's path when fetched from the storage), and the
    mirror is this driver's (also for a study run before mirroring existed)."""
    from resweep.study.callback import StudyCallback
    from resweep.study.mirror_callback import MirrorCallback
    from resweep.study.tracking import TrackingCallback

    internal = getattr(tuner, "_local_tuner", None)  # None under Ray Client
    if internal is None:
        return
    config = internal.get_run_config()
    kept = []
    for cb in config.callbacks or []:
        if isinstance(cb, MirrorCallback):
            continue
        if isinstance(cb, (StudyCallback, TrackingCallback)):
            cb.study_dir = str(layout.root)
        kept.append(cb)
    config.callbacks = [*kept, *([mirror] if mirror is not None else [])]


def print_status(study_dir: str | Path) -> None:  # kept for callers of the old location
    from resweep.study.status_view import print_status as _print_status

    _print_status(study_dir)
