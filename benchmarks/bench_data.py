"""Training-sample throughput: patch store (memory-mapped uint8) vs decoding image files.

    python benchmarks/bench_data.py [FOLDER] [--max-images N] [--seconds S]

Both pipelines produce the same samples (random LQ patch, x``scale`` bicubic degradation
on the fly, flips/rotations) through a single-process DataLoader; only where the pixels
come from differs. The store is built in a temporary folder first (its build time is
reported separately: it is paid once per data set, not per run).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import TaskConfig  # noqa: E402
from resweep.data import (  # noqa: E402
    FolderSource,
    ImageSource,
    PatchStoreSource,
    TrainPatchDataset,
    list_images,
    prepare_patch_store,
)
from resweep.degradations.tasks import build_task  # noqa: E402

DEFAULT_FOLDER = Path("/work/shared/datasets/CBSD432")


class Pipeline:
    """A DataLoader over one source, timed in rounds (rounds of the two pipelines alternate,
    so load from other processes on a shared machine hits both alike)."""

    def __init__(self, source: ImageSource, args: argparse.Namespace, seed: int = 0) -> None:
        task = build_task(TaskConfig(kind="sr", scale=args.scale))
        dataset = TrainPatchDataset(source, task, args.patch_size, augment=True)
        rng = np.random.default_rng(seed)
        # Keys as the engine's sampler makes them: (image index, sample seed), drawn lazily.
        keys = ((int(rng.integers(len(dataset))), int(rng.integers(2**62))) for _ in range(10**9))
        loader = DataLoader(dataset, batch_size=args.batch_size, sampler=keys, num_workers=0)
        self.batches = iter(loader)
        next(self.batches)  # warm-up: caches, first touch of the memory map
        self.rates: list[float] = []
        self.cpu_rates: list[float] = []
        self.samples = 0

    def run(self, seconds: float) -> None:
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            count += next(self.batches)["lq"].shape[0]
        self.rates.append(count / (time.perf_counter() - start))
        self.cpu_rates.append(count / max(time.process_time() - cpu, 1e-9))
        self.samples += count


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", nargs="?", type=Path, default=DEFAULT_FOLDER)
    parser.add_argument("--max-images", type=int, default=100, help="first N images (default 100)")
    parser.add_argument("--patch-size", type=int, default=48)
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--sub-size", type=int, default=480)
    parser.add_argument("--stride", type=int, default=240)
    parser.add_argument("--seconds", type=float, default=12.0, help="timing per pipeline")
    parser.add_argument("--rounds", type=int, default=4, help="alternating timing rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    files = list_images(args.folder)[: args.max_images]
    with tempfile.TemporaryDirectory(prefix="bench_data_") as tmp:
        subset = Path(tmp) / "images"
        subset.mkdir()
        for f in files:  # a --max-images subset without copying the files
            (subset / f.name).symlink_to(f.resolve())
        t0 = time.perf_counter()
        store = prepare_patch_store(
            subset,
            Path(tmp) / "store.arrow",
            sub_size=args.sub_size,
            stride=args.stride,
            progress=False,
        )
        build_s = time.perf_counter() - t0
        store_src = PatchStoreSource(store)
        folder_src = FolderSource(subset)
        size_mb = store.stat().st_size / 2**20
        print(
            f"{args.folder} : {len(files)} images -> {len(store_src)} sub-images, "
            f"store {size_mb:.0f} MiB built in {build_s:.1f} s"
        )
        print(
            f"x{args.scale} sr, LQ patch {args.patch_size}, batch {args.batch_size}, "
            f"single-process loader, {args.threads} torch thread(s), {args.seconds:.0f} s each "
            f"in {args.rounds} alternating rounds"
        )
        pipelines = {
            "(a) patch store (mmap)": Pipeline(store_src, args),
            "(b) decode files each time": Pipeline(folder_src, args),
        }
        for _ in range(args.rounds):
            for pipe in pipelines.values():
                pipe.run(args.seconds / args.rounds)

    print(f"{'pipeline':<28}{'samples/s':>11}{'(min-max)':>16}{'per CPU-s':>11}{'samples':>9}")
    medians = []
    for label, pipe in pipelines.items():
        med = float(np.median(pipe.rates))
        medians.append(med)
        spread = f"{min(pipe.rates):.0f}-{max(pipe.rates):.0f}"
        cpu = float(np.median(pipe.cpu_rates))
        print(f"{label:<28}{med:>11.1f}{spread:>16}{cpu:>11.1f}{pipe.samples:>9d}")
    print(f"ratio (a)/(b), median wall-clock rates: {medians[0] / medians[1]:.2f}x")


if __name__ == "__main__":
    main()
