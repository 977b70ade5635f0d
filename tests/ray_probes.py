"""Worker loops used by the Ray tests. They run the real engine and write what each rank saw.

Shipped to Ray workers by value (see ``ship_by_value``), so the tests folder need not be
importable on the workers.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import torch


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RecordingDataset(torch.utils.data.Dataset):
    def __init__(self, inner):
        self.inner = inner
        self.keys: list[Any] = []

    def __len__(self):
        return len(self.inner)

    def __getitem__(self, key):
        self.keys.append(list(key))
        return self.inner[key]


class KillingReporter:
    """Wraps the Ray reporter; SIGKILLs its own worker at ``kill_at`` the first time."""

    def __init__(self, inner, kill_at: int, marker: Path, rank: int, kill_rank: int):
        self.inner, self.kill_at, self.marker, self.rank, self.kill_rank = inner, kill_at, marker, rank, kill_rank

    def report(self, metrics, checkpoint):
        if metrics.get("iteration") == self.kill_at and self.rank == self.kill_rank and not self.marker.exists():
            self.marker.write_text("killed")
            # give Ray Train's controller time to register the last checkpoint, as it would
            # have in a real run where workers die minutes, not milliseconds, after it
            time.sleep(8)  # Ray Train polls workers every 2 s
            os.kill(os.getpid(), signal.SIGKILL)
        self.inner.report(metrics, checkpoint)


def probe_loop(loop_config: dict[str, Any]) -> None:
    import ray.train
    import ray.train.torch

    from resweep.config import ExperimentConfig
    from resweep.engine.trainer import Trainer
    from resweep.methods import World
    from resweep.trainables.worker import RayTrainReporter, load_resume_state

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    world = World(rank=rank, world_size=ctx.get_world_size(), device=ray.train.torch.get_device())
    config = ExperimentConfig.from_dict(loop_config["experiment"])
    out = Path(loop_config["probe_dir"])
    reporter: Any = RayTrainReporter()
    if loop_config.get("kill_at"):
        reporter = KillingReporter(reporter, loop_config["kill_at"], out / "killed.marker", rank, loop_config.get("kill_rank", 1))
    resume = load_resume_state(ray.train.get_checkpoint())
    trainer = Trainer(config, world=world, reporter=reporter, resume_state=resume, log=lambda _m: None)
    start = trainer.iteration
    trainer.dataset = RecordingDataset(trainer.dataset)
    trainer.fit()
    attempt = len(list(out.glob(f"rank{rank}-*.json")))
    (out / f"rank{rank}-{attempt}.json").write_text(
        json.dumps(
            {
                "rank": rank,
                "start_iteration": start,
                "end_iteration": trainer.iteration,
                "keys": trainer.dataset.keys,
                "digest": weights_digest(trainer.model),
            }
        )
    )


def ship_by_value() -> None:
    import sys

    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
