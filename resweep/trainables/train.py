"""``resweep train``: one model trained by N Ray Train workers (DDP), on local Ray or a cluster."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resweep.config import ExperimentConfig
from resweep.fileio import write_text_atomic
from resweep.status import Status
from resweep.trainables.runtime import init_ray
from resweep.trainables.trial_log import error_line, summarize_exception
from resweep.trainables.worker import WorkerLoopConfig, train_loop_per_worker

RUN_LOG = "log.txt"


@dataclass
class TrainSummary:
    status: str
    output_dir: Path
    metrics: dict[str, Any]
    checkpoint: str | None
    seconds: float
    error: str | None = None
    log_path: Path | None = None


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
    # workers' own output stays in Ray's logs: the run's lines are in log.txt, progress is shown here
    init_ray(address, quiet=True)
    gpu = _use_gpu(use_gpu)
    log_path = output_dir / RUN_LOG
    # Stages first, as a study makes them (a Ray task each), into the same artifact store the
    # engine uses on its own (<cache>/artifacts/<key>): a rerun or a study on this cache reuses them.
    from resweep.engine.trainer import default_cache_dir
    from resweep.stages.on_ray import prepare_stages
    from resweep.stages.produce import artifact_uris

    storage = str(Path(cache_dir) if cache_dir else default_cache_dir())
    prepared = prepare_stages([config], storage, output_dir, cpus=cpus_per_worker, gpus=1 if gpu else 0)
    loop_config = WorkerLoopConfig(
        experiment=config.to_dict(),
        output_dir=str(output_dir),
        cache_dir=str(cache_dir) if cache_dir else None,
        image_dir=str(output_dir / "images" / "final"),
        # wall-clock start of `resweep train`: workers report startup_seconds against it
        started_at=started_at,
        log_path=str(log_path),
        artifacts=artifact_uris(storage, prepared.roles_for(config)),
    )
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config.to_dict(),
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
    from ray.train import TrainingFailedError

    try:
        result = _fit_with_progress(trainer, config, output_dir, quiet)
        error = result.error
    except TrainingFailedError as exc:  # Train V2 raises what a worker raised, wrapped
        result, error = None, exc
    metrics = dict(result.metrics or {}) if result is not None else {}
    metrics.pop("per_image", None)
    summary = TrainSummary(
        status=str(metrics.get("status", Status.ERRORED.value if error else "unknown")),
        output_dir=output_dir,
        metrics=metrics,
        checkpoint=result.checkpoint.path if result is not None and result.checkpoint else None,
        seconds=time.perf_counter() - start,
        error=error_line(summarize_exception(error)) if error else None,
        log_path=log_path if log_path.is_file() else None,
    )
    write_text_atomic(
        output_dir / "result.json",
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


def _fit_with_progress(trainer: Any, config: ExperimentConfig, output_dir: Path, quiet: bool) -> Any:
    """``trainer.fit()`` (in this thread: Ray and Ctrl-C want the main thread) while a helper
    thread shows the run's progress, read from the ``curves.parquet`` rank 0 rewrites at every
    report."""
    from resweep.study.progress import Progress

    progress = Progress(config.name, total_runs=None, quiet=quiet, single_run=True)
    curves = output_dir / "curves.parquet"
    seen = [curves.stat().st_mtime if curves.is_file() else 0.0]
    done = threading.Event()

    def poll() -> None:
        if curves.is_file() and curves.stat().st_mtime != seen[0]:
            seen[0] = curves.stat().st_mtime
            last = _last_report(curves)
            if last:
                progress.run_report("run", last)
        progress.tick()

    def watch() -> None:
        while not done.wait(1.0):
            poll()

    progress.start()
    progress.run_started("run", config.name, config.train.iterations)
    watcher = threading.Thread(target=watch, name="resweep-train-progress", daemon=True)
    watcher.start()
    status = Status.ERRORED.value
    try:
        result = trainer.fit()
        status = str((result.metrics or {}).get("status") or status)
        return result
    finally:
        done.set()
        watcher.join(timeout=5)
        poll()
        progress.run_ended("run", status)
        progress.stop()


def _last_report(path: Path) -> dict[str, Any] | None:
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path, columns=None).to_pylist()
    except Exception:  # being replaced right now: next poll
        return None
    return rows[-1] if rows else None
