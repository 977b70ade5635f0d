"""``resweep train``: one model trained by N Ray Train workers (DDP), on local Ray or a cluster."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resweep.config import ExperimentConfig
from resweep.trainables.runtime import init_ray
from resweep.trainables.worker import train_loop_per_worker


@dataclass
class TrainSummary:
    status: str
    output_dir: Path
    metrics: dict[str, Any]
    checkpoint: str | None
    seconds: float
    error: str | None = None


def _use_gpu(requested: bool | None) -> bool:
    if requested is not None:
        return requested
    import ray

    return ray.cluster_resources().get("GPU", 0) > 0


def run_training(
    config: ExperimentConfig,
    *,
    output_dir: str | Path,
    workers: int = 1,
    address: str | None = None,
    use_gpu: bool | None = None,
    cpus_per_worker: float = 1,
    max_failures: int = 2,
    cache_dir: str | Path | None = None,
    quiet: bool = False,
) -> TrainSummary:
    """Train ``config`` with ``workers`` DDP workers; results and checkpoints go to ``output_dir``.

    Running it again with the same ``output_dir`` continues from the last checkpoint.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from resweep.engine.preflight import preflight

    start = time.perf_counter()
    started_at = time.time()
    preflight(config)  # bad data fails here, before Ray starts, with the file named
    output_dir = Path(output_dir).resolve()
    output_dir.mkdir(parents=True, exist_ok=True)
    config.save(output_dir / "config.yaml")
    init_ray(address, quiet=quiet)
    gpu = _use_gpu(use_gpu)
    # Stages first, as a study makes them (a Ray task each), into the same artifact store the
    # engine uses on its own (<cache>/artifacts/<key>): a rerun or a study on this cache reuses them.
    from resweep.engine.trainer import default_cache_dir
    from resweep.stages.on_ray import prepare_stages
    from resweep.stages.produce import artifact_uris

    storage = str(Path(cache_dir) if cache_dir else default_cache_dir())
    prepared = prepare_stages([config], storage, output_dir, cpus=cpus_per_worker, gpus=1 if gpu else 0)
    artifacts = artifact_uris(storage, prepared.roles_for(config))
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "experiment": config.to_dict(),
            "output_dir": str(output_dir),
            "cache_dir": str(cache_dir) if cache_dir else None,
            "artifacts": artifacts,  # role -> URI; each worker fetches its own copy
            "image_dir": str(output_dir / "images" / "final"),
            # wall-clock start of `resweep train`: workers report startup_seconds against it
            "started_at": started_at,
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=gpu, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(
            name="ray_train",
            storage_path=str(output_dir),
            failure_config=FailureConfig(max_failures=max_failures),
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=config.train.checkpoints_to_keep),
        ),
    )
    result = trainer.fit()
    metrics = dict(result.metrics or {})
    metrics.pop("per_image", None)
    summary = TrainSummary(
        status=str(metrics.get("status", "errored" if result.error else "unknown")),
        output_dir=output_dir,
        metrics=metrics,
        checkpoint=result.checkpoint.path if result.checkpoint else None,
        seconds=time.perf_counter() - start,
        error=str(result.error) if result.error else None,
    )
    (output_dir / "result.json").write_text(
        json.dumps(
            {
                "status": summary.status,
                "metrics": summary.metrics,
                "checkpoint": summary.checkpoint,
                "seconds": summary.seconds,
                "error": summary.error,
            },
            indent=2,
            default=str,
        )
    )
    return summary
