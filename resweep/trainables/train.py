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
    from resweep.trainables.relay import relay_name, start_relay

    prepared = prepare_stages([config], storage, output_dir, cpus=cpus_per_worker, gpus=1 if gpu else 0)
    # rank 0 may run on another node: its lines, images and reports come back through the relay,
    # and this process writes log.txt, images/ and curves.parquet / per_image.parquet
    relay = start_relay(str(output_dir))
    loop_config = WorkerLoopConfig(
        experiment=config.to_dict(),
        cache_dir=str(cache_dir) if cache_dir else None,
        # wall-clock start of `resweep train`: workers report startup_seconds against it
        started_at=started_at,
        relay=relay_name(str(output_dir)),
        relay_source="run",
        image_subdir="final",
        relay_reports=True,
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

    from resweep.trainables.relay import stop_relay

    try:
        result = _fit_with_progress(trainer, config, output_dir, quiet, relay)
        error = result.error
    except TrainingFailedError as exc:  # Train V2 raises what a worker raised, wrapped
        result, error = None, exc
    finally:
        stop_relay(relay)
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


def _fit_with_progress(trainer: Any, config: ExperimentConfig, output_dir: Path, quiet: bool, relay: Any) -> Any:
    """``trainer.fit()`` (in this thread: Ray and Ctrl-C want the main thread) while a helper
    thread drains the relay about once a second: rank 0's log lines to ``log.txt``, its saved
    images to ``images/``, its reports to ``curves.parquet`` / ``per_image.parquet`` (a resumed
    run continues them) and to the progress display."""
    from resweep.engine.records import RunRecorder
    from resweep.study.progress import Progress
    from resweep.trainables.relay import drain, write_relayed

    progress = Progress(config.name, total_runs=None, quiet=quiet, single_run=True)
    recorder = RunRecorder(output_dir)
    done = threading.Event()
    lock = threading.Lock()  # the watcher's last poll and the final one must not interleave

    def poll() -> None:
        with lock:
            try:
                batch = drain(relay)
            except Exception:  # the next poll tries again
                batch = {}
            for item in batch.values():
                write_relayed(item, log_path=output_dir / RUN_LOG, error_path=None,
                              image_root=output_dir / "images")
                for metrics in item.get("records", []):
                    recorder.add(metrics)
                if item.get("records"):
                    progress.run_report("run", item["records"][-1])
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
