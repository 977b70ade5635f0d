"""The per-worker training function that Ray Train runs, and the reporters that feed Ray."""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resweep.config import ExperimentConfig
from resweep.engine.checkpoint import load_checkpoint, save_checkpoint
from resweep.engine.records import RunRecorder
from resweep.engine.trainer import Trainer
from resweep.methods import World


class _RayReporter:
    """Saves the trainer's state to a temporary folder and hands it to Ray with the metrics
    (Ray copies it into the run's storage before the call returns)."""

    def __init__(self, recorder: RunRecorder | None = None):
        self.recorder = recorder

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        if self.recorder is not None:
            self.recorder.add(metrics)
        if checkpoint is None:
            self._send(metrics, None, None)
            return
        with tempfile.TemporaryDirectory(prefix="resweep-ckpt-") as tmp:
            save_checkpoint(checkpoint, tmp)
            self._send(metrics, tmp, int(checkpoint["iteration"]))

    def _send(self, metrics: dict[str, Any], directory: str | None, iteration: int | None) -> None:
        raise NotImplementedError


class RayTrainReporter(_RayReporter):
    """Through ``ray.train.report`` (a barrier: every rank calls it at the same steps)."""

    def _send(self, metrics: dict[str, Any], directory: str | None, iteration: int | None) -> None:
        import ray.train

        if directory is None:
            ray.train.report(metrics)
        else:
            ray.train.report(
                metrics,
                checkpoint=ray.train.Checkpoint.from_directory(directory),
                checkpoint_dir_name=f"checkpoint_{iteration:08d}",
            )


class TuneReporter(_RayReporter):
    """Straight to Ray Tune, for trials that train in the trial process (one worker)."""

    def _send(self, metrics: dict[str, Any], directory: str | None, iteration: int | None) -> None:
        from ray import tune

        checkpoint = tune.Checkpoint.from_directory(directory) if directory else None
        tune.report(metrics, checkpoint=checkpoint)


def load_resume_state(checkpoint: Any) -> dict[str, Any] | None:
    """The trainer state held by a Ray checkpoint, or None."""
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_checkpoint(directory)


@dataclass(frozen=True)
class WorkerLoopConfig:
    """What every Ray Train worker of one run needs (sent as ``train_loop_config``)."""

    experiment: dict[str, Any]
    """an ExperimentConfig as a dict"""
    output_dir: str | None = None
    """rank 0 keeps curves.parquet / per_image.parquet there (``resweep train``)"""
    cache_dir: str | None = None
    started_at: float | None = None
    """wall-clock start of the run: workers report startup_seconds against it"""
    image_dir: str | None = None
    """without a relay: where rank 0 saves the final images (a folder the driver can read)"""
    log_path: str | None = None
    """without a relay: rank 0 appends its log lines there (a folder the driver can read)"""
    relay: str | None = None
    """the driver's relay actor (resweep.trainables.relay): rank 0's log lines, any rank's
    errors, rank 0's saved images (and with ``relay_reports`` its reports) go through it"""
    relay_source: str = "run"
    """who is speaking (a study's trial id)"""
    image_subdir: str | None = None
    """with a relay: the images' folder under the driver's image root (None: no images)"""
    relay_reports: bool = False
    """send each report to the driver too (``resweep train`` writes curves.parquet from them)"""
    artifacts: dict[str, str] | None = None
    """stage role -> artifact URI (see resweep.stages); each worker fetches its own copy"""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerLoopConfig:
        return cls(**data)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker (``loop_config``: a :class:`WorkerLoopConfig` dict)."""
    import ray.train
    import ray.train.torch

    from resweep.trainables.relay import relay_sender, saved_images
    from resweep.trainables.trial_log import TrialLog

    _quiet_report_log()
    settings = WorkerLoopConfig.from_dict(loop_config)
    context = ray.train.get_context()
    world = World(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
    )
    with relay_sender(settings.relay, settings.relay_source) as relay:
        if relay is not None:  # rank 0 says everything, the other ranks their errors
            log = TrialLog(sink=relay.write, min_level="DEBUG" if world.is_main else "ERROR")
            recorder = relay if settings.relay_reports and world.is_main else None
        else:
            log = TrialLog(settings.log_path if world.is_main else None)
            recorder = RunRecorder(settings.output_dir) if settings.output_dir and world.is_main else None
        subdir = settings.image_subdir if world.is_main else None
        fallback = Path(settings.image_dir) if settings.image_dir else None
        with log.capture(), log.recording_errors(), saved_images(relay, subdir, fallback) as image_dir:
            _fit(settings, world, log, recorder, image_dir if relay is not None else fallback)


def _fit(settings: WorkerLoopConfig, world: World, log: Any, recorder: Any,
         image_dir: Path | None) -> None:
    import ray.train

    config = ExperimentConfig.from_dict(settings.experiment, source="<trial config>")
    artifacts = None
    if settings.artifacts is not None:
        from resweep.stages.produce import fetch_artifacts

        artifacts = fetch_artifacts(settings.artifacts)  # into the node's shared artifact cache
    trainer = Trainer(
        config,
        world=world,
        reporter=RayTrainReporter(recorder),
        resume_state=load_resume_state(ray.train.get_checkpoint()),
        cache_dir=Path(settings.cache_dir) if settings.cache_dir else None,
        log=log.info if log.active else print,
        started_at=settings.started_at,
        image_dir=image_dir,
        artifacts=artifacts,
    )
    trainer.fit()


def _quiet_report_log() -> None:
    """Ray Train logs every report at INFO, per-image JSON included; keep worker logs readable."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
