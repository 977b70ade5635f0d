"""Ray Train (DDP over gloo) with real workers on a local Ray."""

from __future__ import annotations

import json

import pytest

from resweep.config import ExperimentConfig

from conftest import tiny_config_dict

pytestmark = pytest.mark.ray


def _fit(ray_local, tmp_path, config: ExperimentConfig, **extra):
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    import ray_probes

    ray_probes.ship_by_value()
    probe_dir = tmp_path / "probe"
    probe_dir.mkdir()
    trainer = TorchTrainer(
        ray_probes.probe_loop,
        train_loop_config={"experiment": config.to_dict(), "probe_dir": str(probe_dir), **extra},
        scaling_config=ScalingConfig(num_workers=2, use_gpu=False, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(
            name="probe",
            storage_path=str(tmp_path / "storage"),
            failure_config=FailureConfig(max_failures=1),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
    )
    result = trainer.fit()
    records = [json.loads(p.read_text()) for p in sorted(probe_dir.glob("rank*.json"))]
    return result, records, probe_dir


def test_two_workers_see_different_samples_and_end_identical(ray_local, tmp_path):
    config = ExperimentConfig.from_dict(tiny_config_dict(**{"train.iterations": 6, "eval.every": 6}))
    result, records, _ = _fit(ray_local, tmp_path, config)
    assert result.error is None
    assert sorted(r["rank"] for r in records) == [0, 1]
    keys = {r["rank"]: {tuple(k) for k in r["keys"]} for r in records}
    assert len(keys[0]) == len(keys[1]) == 6 * 2  # per-worker batch 2, 6 steps
    assert keys[0].isdisjoint(keys[1])
    digests = {r["digest"] for r in records}
    assert len(digests) == 1, "DDP ranks ended with different weights"
    assert result.metrics["status"] == "finished" and result.metrics["iteration"] == 6


@pytest.mark.slow
def test_killed_worker_is_restarted_from_last_checkpoint(ray_local, tmp_path):
    config = ExperimentConfig.from_dict(
        tiny_config_dict(**{"train.iterations": 8, "eval.every": 4, "train.log_every": 2})
    )
    result, records, probe_dir = _fit(ray_local, tmp_path, config, kill_at=6, kill_rank=1)
    assert (probe_dir / "killed.marker").exists(), "the worker was never killed"
    assert result.error is None
    assert result.metrics["iteration"] == 8 and result.metrics["status"] == "finished"
    # the finishing attempt started from the checkpoint at iteration 4, not from scratch
    assert {r["start_iteration"] for r in records} == {4}
    assert {r["end_iteration"] for r in records} == {8}
    assert len({r["digest"] for r in records}) == 1


@pytest.mark.slow
def test_resweep_train_writes_results_and_continues_in_the_same_folder(ray_local, tmp_path):
    import pyarrow.parquet as pq

    from resweep.config import load_config
    from resweep.trainables.train import run_training

    out = tmp_path / "run"
    first = ExperimentConfig.from_dict(tiny_config_dict(**{"train.iterations": 4, "eval.every": 4}))
    summary = run_training(first, output_dir=out, workers=1, quiet=True)
    assert summary.status == "finished" and summary.metrics["iteration"] == 4
    assert load_config(out / "config.yaml") == first
    for name in ("curves.parquet", "per_image.parquet", "result.json"):
        assert (out / name).is_file(), name

    # the same folder again, with a longer schedule: Ray Train restores the last checkpoint
    longer = first.with_overrides({"train.iterations": 8})
    summary = run_training(longer, output_dir=out, workers=1, quiet=True)
    assert summary.status == "finished" and summary.metrics["iteration"] == 8
    curves = pq.read_table(out / "curves.parquet").to_pandas()
    assert list(curves["iteration"]) == [2, 4, 6, 8]  # continued from 4, nothing repeated
