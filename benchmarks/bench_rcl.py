"""Cost of RCL pretraining vs a plain supervised step, and of each distance, side by side.

    python benchmarks/bench_rcl.py [--device cpu|cuda|auto] [--model unet] [--batch 16]
                                   [--patch 64] [--crop 32] [--dist-crop 64] [--repeats 5]

Part 1, training steps (forward + backward + Adam step of ``--model`` on ``--batch`` noisy
``--patch`` px patches; RCL runs the network on the two ``--crop`` px crops of each patch, as
its ``transform_batch`` makes the trainer do): supervised L1; RCL-EMD with the consistency term (ResNet-50 up to
layer2, the method's default; the real weights if found, random otherwise: same cost); RCL-EMD
contrastive term only; RCL with Bhattacharyya and MMD. Ratios are to the supervised step.

Part 2, the distances alone: forward + backward of the all-pairs ``(N+1)x(N+1)`` matrix of
EMD, Bhattacharyya (64 bins) and MMD (256-value subsample, 3 bandwidths) on residual crops of
``--dist-crop`` px, at batch 16 and 64. Ratios are to EMD at the same batch; ``--former`` adds
the former implementations (BD's dense ``(M, K, bins)`` histograms, MMD's ``K²`` kernel sums).
Measured (``--former --repeats 3``, one thread on a 2-core CPU shared with ~20 other jobs, CPU
ms): batch 16: EMD 59, BD 203 (3.5x), MMD 68 (1.2x), former BD 1,331 (23x), former MMD 1,769
(30x); batch 64: EMD 338, BD 1,244 (3.7x), MMD 266 (0.8x), former BD 5,575 (16x), former MMD
26,765 (79x). Training step, batch 16, vs supervised L1 on the patch: RCL-EMD 0.74x, contrast
only 0.56x, RCL-BD 0.92x, RCL-MMD 0.74x (the network runs on two 32 px crops per 64 px patch:
half the pixels; before, on the patch: 1.35x, 0.94x, 1.53x, 2.49x).

Timing: variants alternate round-robin so load from other processes hits them alike. On CPU
the figure is the median CPU time of this process per step (wall-clock median beside it); on
CUDA the median wall time after synchronising.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import ExperimentConfig  # noqa: E402
from resweep.losses.distribution_distances import (  # noqa: E402
    DistributionDistance,
    contrastive_cross_entropy,
    soft_histogram,
)
from resweep.methods import MethodContext, World  # noqa: E402
from resweep.methods.rcl import RCL, RCLConfig  # noqa: E402
from resweep.models import create_model  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(
    label: str, args: argparse.Namespace, device: torch.device, rcl: dict | None
) -> Callable[[], None]:
    torch.manual_seed(0)
    model = create_model(args.model, scale=1).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-7)
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(args.batch, 3, args.patch, args.patch, generator=g)
    noisy = (clean + 0.05 * torch.randn(clean.shape, generator=g)).to(device)
    clean = clean.to(device)
    method = None
    if rcl is not None:
        exp = ExperimentConfig.from_dict({
            "task": {"kind": "hetero_denoise", "scale": 1}, "model": {"name": args.model},
            "data": {"patch_size": args.patch, "batch_size": args.batch},
        })
        cfg = RCLConfig(crop_size=args.crop, allow_random_features=True, **rcl)
        method = RCL(cfg, MethodContext(config=exp, model=model, task=None, world=World(device=device),
                                        cache_dir=Path("."), log=lambda _m: None)).to(device)
    iteration = [0]

    def step() -> None:
        if method is None:
            loss = F.l1_loss(model(noisy), clean)
        else:  # as the trainer: the method's crops (Alg. 1: the network runs on each), then its loss
            batch = method.transform_batch({"lq": noisy}, iteration[0])
            loss = sum(method.loss_terms(model(batch["lq"]), batch, iteration[0]).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        iteration[0] += 1

    step.__name__ = label
    return step


def _former_bhattacharyya(a: torch.Tensor, b: torch.Tensor, bins: int = 64) -> torch.Tensor:
    """The former implementation: every value against every bin, ``(M, K, bins)``."""
    a2, b2 = a.flatten(1), b.flatten(1)
    top = torch.maximum(a2.detach().abs().max(), b2.detach().abs().max()).clamp_min(1e-6)
    centres = torch.linspace(-1.0, 1.0, bins, dtype=a2.dtype, device=a2.device) * top
    width = 2.0 * top / (bins - 1)
    p, q = soft_histogram(a2, centres, width), soft_histogram(b2, centres, width)
    return -torch.log((torch.sqrt(p + 1e-10) @ torch.sqrt(q + 1e-10).T).clamp(1e-10, 1.0))


def _former_mmd(a: torch.Tensor, b: torch.Tensor, samples: int = 256, sigmas=(0.01, 0.03, 0.1)) -> torch.Tensor:
    """The former implementation: kernel sums over all K² value pairs of every pair of tensors
    (the same 256-position subsample), 8 rows at a time."""
    index = torch.randperm(a[0].numel(), generator=torch.Generator().manual_seed(0))[:samples].to(a.device)
    a2, b2 = a.flatten(1)[:, index], b.flatten(1)[:, index]

    def mean_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        sq = (x.unsqueeze(1).unsqueeze(-1) - y.unsqueeze(0).unsqueeze(-2)) ** 2
        return sum(torch.exp(-sq / (2 * s * s)) for s in sigmas).mean(dim=(-2, -1))

    kaa = torch.cat([mean_kernel(a2[i:i + 1], a2[i:i + 1])[0] for i in range(a2.shape[0])])
    kbb = torch.cat([mean_kernel(b2[i:i + 1], b2[i:i + 1])[0] for i in range(b2.shape[0])])
    kab = torch.cat([mean_kernel(a2[i:i + 8], b2) for i in range(0, a2.shape[0], 8)])
    return (kaa[:, None] + kbb[None, :] - 2.0 * kab).clamp_min(0.0)


def make_distance(name: str, batch: int, crop: int, device: torch.device) -> Callable[[], None]:
    formers = {"bhattacharyya (former, dense)": _former_bhattacharyya, "mmd (former, K² sums)": _former_mmd}
    distance = formers.get(name) or DistributionDistance(name=name)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(2)
    scales = torch.linspace(0.01, 0.08, batch).view(-1, 1, 1, 1)
    anchors = (torch.randn(batch, 3, crop, crop, generator=g) * scales).to(device).requires_grad_()
    seconds = (torch.randn(batch, 3, crop, crop, generator=g) * scales).to(device).requires_grad_()

    def run() -> None:
        contrastive_cross_entropy(distance(anchors, seconds), 0.1).backward()

    return run


def measure(runs: dict[str, Callable[[], None]], repeats: int, device: torch.device) -> dict[str, tuple[float, float]]:
    for fn in runs.values():  # warm-up
        fn()
    cpu: dict[str, list[float]] = {k: [] for k in runs}
    wall: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        for label, fn in runs.items():
            _sync(device)
            c0, w0 = time.process_time(), time.perf_counter()
            fn()
            _sync(device)
            cpu[label].append(time.process_time() - c0)
            wall[label].append(time.perf_counter() - w0)
    return {k: (statistics.median(cpu[k]), statistics.median(wall[k])) for k in runs}


def table(title: str, results: dict[str, tuple[float, float]], reference: str, device: torch.device) -> None:
    print(f"\n{title}")
    key = 1 if device.type == "cuda" else 0
    base = results[reference][key]
    print(f"  {'variant':<34} {'cpu ms' if key == 0 else 'wall ms':>9} {'wall ms':>9} {'ratio':>7}")
    for label, (c, w) in results.items():
        main = c if key == 0 else w
        print(f"  {label:<34} {main * 1e3:9.1f} {w * 1e3:9.1f} {main / base:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--model", default="unet")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--crop", type=int, default=32)
    parser.add_argument("--dist-crop", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on CPU")
    parser.add_argument("--former", action="store_true",
                        help="also time the former BD / MMD implementations (dense histograms, K² kernel sums)")
    parser.add_argument("--skip-steps", action="store_true", help="only part 2, the distances")
    args = parser.parse_args()
    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    print(f"device {device}, torch threads {torch.get_num_threads()}, model {args.model}, batch {args.batch}, "
          f"patch {args.patch}, crops {args.crop}; distances on crops of {args.dist_crop} px")

    if not args.skip_steps:
        steps = {
            "supervised L1": make_step("supervised", args, device, None),
            "RCL-EMD (contrast + consistency)": make_step("rcl", args, device, {}),
            "RCL-EMD contrast only": make_step("rcl-c", args, device, {"consistency_weight": 0.0}),
            "RCL-BD (contrast + consistency)": make_step("rcl-bd", args, device, {"distance": "bhattacharyya"}),
            "RCL-MMD (contrast + consistency)": make_step("rcl-mmd", args, device, {"distance": "mmd"}),
        }
        table("training step", measure(steps, args.repeats, device), "supervised L1", device)

    names = ["emd", "bhattacharyya", "mmd"]
    if args.former:
        names += ["bhattacharyya (former, dense)", "mmd (former, K² sums)"]
    for batch in (16, 64):
        runs = {f"{name} batch {batch}": make_distance(name, batch, args.dist_crop, device)
                for name in names}
        table(f"distance matrix + contrastive CE, forward + backward, batch {batch}",
              measure(runs, args.repeats, device), f"emd batch {batch}", device)


if __name__ == "__main__":
    main()
