"""The Ray Tune trial function: one trial = one training run of the engine.

With one worker and ``in_process`` the trial process trains itself (no nested worker group);
otherwise it builds and fits a ``TorchTrainer`` (the Train V2 + Tune pattern) whose workers'
reports reach Tune through ``TuneReportCallback``. Either way this module knows nothing of
any loss or method: it receives a resolved :class:`~resweep.study.trial_spec.TrialSpec` and runs
its experiment. Every trial logs to ``<study>/trials/<trial_id>/log.txt``; when it raises, the
traceback goes there and a one-line summary to ``error.json`` beside it (the driver prints
that line, not Ray's traceback). Those files, and the saved images, are written by the driver:
the trial sends them through the study's relay actor (``resweep.trainables.relay``), since on a
cluster the trial's node does not share the driver's disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resweep.study.layout import StudyLayout
from resweep.study.trial_spec import TrialSettings, TrialSpec
from resweep.trainables.relay import RelaySender, relay_sender, saved_images
from resweep.trainables.trial_log import TrialLog


def study_trial(config: dict[str, Any], *, settings: TrialSettings) -> None:
    """Tune function trainable; ``settings`` come with ``tune.with_parameters``."""
    from ray import tune

    from resweep.config import ExperimentConfig

    trial_id = tune.get_context().get_trial_id()
    layout = StudyLayout(Path(settings.study_dir)) if settings.study_dir else None
    started_at = time.time()
    # closed (its last lines, error and images delivered to the driver) before Tune hears the end
    with relay_sender(settings.relay, trial_id) as relay:
        if relay is not None:
            log, error_to = TrialLog(sink=relay.write), relay.error
        else:  # no driver relay (a caller of its own): the files are written here
            log = TrialLog(layout.trial_log(trial_id) if layout else None)
            error_to = layout.trial_error(trial_id) if layout else None
        with log.capture():
            try:
                spec = TrialSpec.from_tune_config(config)
                # stage keys: the driver's, for what it made and for this trial's own stages
                settings = dataclasses.replace(settings, artifact_keys={**settings.artifact_keys, **spec.stage_keys})
                log.info(f"trial {trial_id}: {spec.describe()} (group {spec.group or '-'})")
                experiment = ExperimentConfig.from_dict(spec.experiment, source=f"<trial {trial_id}>")
                if settings.uses_torch_trainer:
                    _train_with_torch_trainer(experiment, trial_id, settings, log, started_at)
                else:
                    _train_in_process(experiment, trial_id, settings, log, started_at, relay)
            except Exception as exc:
                log.record_exception(exc, error_to)
                raise


@contextlib.contextmanager
def _trial_scratch(trial_id: str) -> Iterator[Path]:
    """This trial's own local folder (on whichever node it runs), deleted when the block ends;
    fetched artifacts go to the node's shared cache instead (resweep.stages.scratch)."""
    from resweep.stages.scratch import trial_scratch

    with trial_scratch(trial_id) as path:
        yield path


def _artifact_uris(
    experiment: Any, settings: TrialSettings, trial_id: str, log: TrialLog, device: Any = None
) -> dict[str, str]:
    """role -> URI of the artifacts this trial reads: made by the driver, or here for a stage
    that Optuna's sampled knobs changed (same store, same commit protocol; see resweep.stages):
    on the trial's ``device``, or, for a multi-worker trial (whose process holds no GPU), in a
    Ray task with one worker's resources. Keys come from the driver (``settings.artifact_keys``)."""
    from resweep.stages.produce import artifact_uris, trial_artifact_keys

    origin = {"study": settings.study_dir or settings.storage, "trial": trial_id}
    make = None
    if settings.uses_torch_trainer:
        from resweep.stages.on_ray import produce_as_task

        def make(step: Any) -> Any:
            return produce_as_task(step, settings.storage, cpus=settings.cpus_per_worker,
                                   gpus=settings.gpus_per_worker, origin=origin)

    with _trial_scratch(trial_id) as scratch:
        keys = trial_artifact_keys(experiment, settings.storage, settings.artifact_keys, scratch,
                                   device=device, log=log.info, origin=origin, make=make)
    return artifact_uris(settings.storage, keys)


def _train_in_process(
    experiment: Any, trial_id: str, settings: TrialSettings, log: TrialLog, started_at: float,
    relay: RelaySender | None,
) -> None:
    import torch
    from ray import tune

    from resweep.engine.trainer import Trainer
    from resweep.methods import World
    from resweep.trainables.worker import TuneReporter, load_resume_state

    # Ray sets CUDA_VISIBLE_DEVICES for the trial's GPU share, so the first visible device is ours.
    use_gpu = settings.gpus_per_worker > 0 and torch.cuda.is_available()
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    if not use_gpu:
        torch.set_num_threads(max(1, int(settings.cpus_per_worker)))
    from resweep.stages.produce import fetch_artifacts

    artifacts = fetch_artifacts(_artifact_uris(experiment, settings, trial_id, log, device))
    subdir = trial_id if settings.image_root else None
    with saved_images(relay, subdir, settings.image_dir(trial_id)) as image_dir:
        trainer = Trainer(
            experiment,
            world=World(rank=0, world_size=1, device=device),
            reporter=TuneReporter(),
            resume_state=load_resume_state(tune.get_checkpoint()),
            cache_dir=Path(settings.cache_dir) if settings.cache_dir else None,
            log=log.info,
            started_at=started_at,
            image_dir=image_dir,
            artifacts=artifacts,
        )
        trainer.fit()


def _train_with_torch_trainer(
    experiment: Any, trial_id: str, settings: TrialSettings, log: TrialLog, started_at: float
) -> None:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from resweep.trainables.worker import WorkerLoopConfig, train_loop_per_worker

    use_gpu = settings.gpus_per_worker > 0
    resources = {"CPU": settings.cpus_per_worker, **settings.custom_resources}
    if use_gpu:
        resources["GPU"] = settings.gpus_per_worker
    image_dir = settings.image_dir(trial_id)
    loop_config = WorkerLoopConfig(
        experiment=experiment.to_dict(),
        cache_dir=settings.cache_dir,
        started_at=started_at,
        image_dir=str(image_dir) if image_dir else None,
        log_path=str(log.path) if log.path else None,  # None when the trial relays its lines
        relay=settings.relay if log.sink is not None else None,
        relay_source=trial_id,
        image_subdir=trial_id if image_dir else None,
        artifacts=_artifact_uris(experiment, settings, trial_id, log),
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config.to_dict(),
        scaling_config=ScalingConfig(
            num_workers=settings.workers, use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            # same name on a restarted trial: Train V2 restores its latest checkpoint
            name=f"train-{trial_id}",
            storage_path=settings.train_storage,
            failure_config=FailureConfig(max_failures=settings.max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=experiment.train.checkpoints_to_keep),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error
