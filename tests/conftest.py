"""Shared fixtures: tiny configs, real photographs when ../shared/datasets is present."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import torch

from moto_s3 import s3_server  # noqa: F401  (a fixture for every test: moto's S3 server)

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

# Tests share a 2-core machine: one intra-op thread keeps timings and parallel Ray workers sane.
torch.set_num_threads(1)
os.environ.setdefault("RESWEEP_CACHE", str(ROOT / ".pytest-resweep-cache"))
# presets name their data as $RESWEEP_DATA/<set>
os.environ.setdefault("RESWEEP_DATA", str(SHARED_DATASETS))


def shared_dataset(name: str) -> Path:
    path = SHARED_DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{path} not available")
    return path


def tiny_config_dict(**overrides) -> dict:
    """A config that trains edsr_tiny x2 on the demo photographs in a second or two."""
    data = {
        "name": "tiny",
        "task": {"kind": "sr", "scale": 2},
        "model": {"name": "edsr_tiny"},
        "data": {"train": {"kind": "demo", "split": "train"}, "patch_size": 12, "batch_size": 4},
        "optim": {"name": "adam", "lr": 1e-3},
        "schedule": {"kind": "cosine"},
        "train": {"iterations": 8, "log_every": 2, "seed": 0},
        "eval": {"every": 4, "max_side": 32, "sets": [{"kind": "demo", "split": "eval"}]},
    }
    for path, value in overrides.items():
        node = data
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return data


class CapturingReporter:
    """Collects what the engine reports (and the checkpoint states)."""

    def __init__(self):
        self.reports: list[dict] = []
        self.checkpoints: list[dict] = []

    def report(self, metrics, checkpoint):
        self.reports.append(dict(metrics))
        if checkpoint is not None:
            # the engine hands over live state (as Ray's reporter saves it at once): copy it
            self.checkpoints.append(copy.deepcopy(checkpoint))


@pytest.fixture
def reporter() -> CapturingReporter:
    return CapturingReporter()


@pytest.fixture(scope="session")
def ray_local():
    """One embedded local Ray for the whole session (starting Ray costs seconds)."""
    import ray

    from resweep.trainables.runtime import init_ray

    init_ray(num_cpus=4, quiet=True)
    yield ray
    ray.shutdown()


# --------------------------------------------------------------------------- `make test-fast`
# `make test-fast` runs `-m "not ray"` with RESWEEP_TEST_FAST=1. Tests that use `ray_local` are
# marked `ray` here; any other test that starts Ray in this process without the marker fails
# with a message saying so, instead of silently making the fast loop slow.
def pytest_collection_modifyitems(config, items):
    for item in items:
        if "ray_local" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.ray)


def pytest_configure(config):
    if os.environ.get("RESWEEP_TEST_FAST") != "1":
        return
    import ray

    def refuse(*args, **kwargs):
        raise RuntimeError("this test starts Ray: mark it `@pytest.mark.ray` (make test-fast runs without Ray)")

    ray.init = refuse
