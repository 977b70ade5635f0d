"""The per-worker training function that Ray Train runs, and the reporters that feed Ray."""

from __future__ import annotations

import tempfile
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


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Entry point of each Ray Train worker.

    ``loop_config``: ``experiment`` (an ExperimentConfig as a dict), optional ``output_dir``
    (rank 0 keeps curves.parquet / per_image.parquet there) and ``cache_dir``.
    """
    import ray.train
    import ray.train.torch

    _quiet_report_log()
    context = ray.train.get_context()
    world = World(
        rank=context.get_world_rank(),
        world_size=context.get_world_size(),
        device=ray.train.torch.get_device(),
    )
    config = ExperimentConfig.from_dict(loop_config["experiment"], source="<trial config>")
    output_dir = loop_config.get("output_dir")
    recorder = RunRecorder(output_dir) if output_dir and world.is_main else None
    cache_dir = loop_config.get("cache_dir")
    artifacts = None
    if loop_config.get("artifacts") is not None:
        from resweep.stages.produce import fetch_artifacts
        from resweep.stages.store import scratch_root

        scratch = scratch_root() / context.get_experiment_name()
        artifacts = fetch_artifacts(loop_config["artifacts"], scratch)
    trainer = Trainer(
        config,
        world=world,
        reporter=RayTrainReporter(recorder),
        resume_state=load_resume_state(ray.train.get_checkpoint()),
        cache_dir=Path(cache_dir) if cache_dir else None,
        started_at=loop_config.get("started_at"),
        image_dir=Path(loop_config["image_dir"]) if loop_config.get("image_dir") else None,
        artifacts=artifacts,
    )
    trainer.fit()


def _quiet_report_log() -> None:
    """Ray Train logs every report at INFO, per-image JSON included; keep worker logs readable."""
    import logging

    from ray.train.v2._internal.execution import context as train_context

    logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
