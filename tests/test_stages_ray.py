"""`resweep train` with a config that declares a stage: the stage is made first, as a Ray task,
into the same store the engine uses on its own, and reused by the next run."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from resweep.config import ExperimentConfig

from conftest import tiny_config_dict

pytestmark = pytest.mark.ray


@pytest.mark.slow
def test_resweep_train_makes_the_declared_stage_first_and_reuses_it(ray_local, tmp_path):
    from resweep.stages import ArtifactStore
    from resweep.trainables.train import run_training

    pretrain = tiny_config_dict(**{"name": "pretrain", "train.iterations": 2, "eval.sets": []})
    config = ExperimentConfig.from_dict(
        tiny_config_dict(**{"train.iterations": 2, "model.init_from": {"kind": "train", "experiment": pretrain}})
    )
    cache = tmp_path / "cache"
    run_training(config, output_dir=tmp_path / "first", workers=1, quiet=True, cache_dir=cache)
    (row,) = pq.read_table(tmp_path / "first" / "artifacts.parquet").to_pylist()
    assert row["kind"] == "train" and row["status"] == "produced" and row["metric.iteration"] == 2
    assert ArtifactStore(cache).committed(row["key"]) is not None
    # another run (other knobs, same stage): the artifact is reused, not retrained
    run_training(config.with_overrides({"optim.lr": 5e-4}), output_dir=tmp_path / "second", workers=1,
                 quiet=True, cache_dir=cache)
    (again,) = pq.read_table(tmp_path / "second" / "artifacts.parquet").to_pylist()
    assert again["key"] == row["key"] and again["status"] == "reused"
    assert ArtifactStore(cache).list_keys() == [row["key"]]


def test_waiting_for_stages_logs_which_are_still_running(ray_local):
    """A stage can take many minutes: the driver says which are running instead of staying silent."""
    import time

    from resweep.stages.on_ray import _as_completed

    @ray_local.remote(num_cpus=0)
    def sleep_then(value, seconds, after=None):
        time.sleep(seconds)
        return value

    fast = sleep_then.remote("f", 0.0)
    # `slow` starts only once `fast` has finished (Ray resolves `after` first): the order holds
    # however slowly a loaded machine starts the two workers
    futures = {"slow": sleep_then.remote("s", 2.0, fast), "fast": fast}
    lines: list[str] = []
    order, lines_when_yielded = [], {}
    for key, future in _as_completed(futures, time.time(), lines.append, heartbeat_s=0.3):
        order.append(key)
        lines_when_yielded[key] = len(lines)
        assert ray_local.get(future) == key[0]
    assert order == ["fast", "slow"]
    # every heartbeat names what is running then, and nothing that has finished
    before = lines[: lines_when_yielded["fast"]]
    after = lines[lines_when_yielded["fast"]:]
    assert all("2 running" in line for line in before), before
    assert after and all("1 running" in line and "slow" in line and "fast" not in line for line in after), after
