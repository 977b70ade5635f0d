"""Costs of the MAE-as-a-loss study, side by side in one run.

    python benchmarks/bench_mae.py niqe [--repeats 5]
    python benchmarks/bench_mae.py steps [--device cpu|cuda|auto] [--batch 4] [--repeats 5]

``niqe``: time per 512x512 RGB image of NIQE next to the full-reference metrics the evaluator
always computes (PSNR/SSIM, RGB and Y, ``image_metrics``), alternated round-robin; the ratio
says what ``eval.sets[i].niqe: true`` adds to an evaluation.

``steps``: one training step (forward, loss, backward, Adam) of the restoration network with
the pixel loss only ("Original"), + CTMAE, + CCMAE (whole image and patch versions) and + VGG
(``perceptual``), alternated round-robin. On CPU the cost is the median CPU time of this process
per step (robust to other processes on a shared machine), on CUDA the median wall time; ratios
are to Original. Loss networks are randomly initialised (same cost as trained ones).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout


def _cpu_or_wall(device: torch.device) -> Callable[[], float]:
    return time.perf_counter if device.type == "cuda" else time.process_time


def bench_niqe(args: argparse.Namespace) -> None:
    from skimage import data as skdata

    from resweep.metrics import image_metrics
    from resweep.metrics.niqe import niqe

    rgb = torch.from_numpy(skdata.astronaut()).permute(2, 0, 1).double() / 255  # 512x512
    noisy = (rgb + 0.05 * torch.randn(rgb.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    jobs = {
        "niqe": lambda: niqe(noisy),
        "psnr+ssim (rgb, y)": lambda: image_metrics(noisy, rgb),
    }
    for job in jobs.values():  # warm caches (shape grid, imresize taps)
        job()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    wall: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for name, job in jobs.items():
            c0, w0 = time.process_time(), time.perf_counter()
            job()
            times[name].append(time.process_time() - c0)
            wall[name].append(time.perf_counter() - w0)
    ref = statistics.median(times["psnr+ssim (rgb, y)"])
    print(f"512x512 RGB image, {args.repeats} repeats, torch threads {torch.get_num_threads()}")
    print(f"{'metric':<22}{'cpu ms (median)':>16}{'wall ms (median)':>18}{'x psnr+ssim':>13}")
    for name in jobs:
        cpu = statistics.median(times[name])
        print(f"{name:<22}{cpu * 1e3:>16.1f}{statistics.median(wall[name]) * 1e3:>18.1f}{cpu / ref:>13.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", choices=["niqe", "steps"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--model", default="edsr_baseline")
    parser.add_argument("--arch", default="small", choices=["tiny", "small", "base"], help="MAE size")
    args = parser.parse_args(argv)
    if args.part == "niqe":
        bench_niqe(args)
    else:
        bench_steps(args)


def _encoder_artifact(variant: str, arch: str, crop: int, out_dir: Path) -> Path:
    """A randomly initialised MAE artifact (one pretraining step: the cost of E is the same)."""
    from resweep.stages import StageContext
    from resweep.stages.mae_pretrain import MaePretrainStage, produce_mae_pretrain

    definition = MaePretrainStage(
        variant=variant, arch=arch, steps=1, batch_size=2, crop=crop,
        data={"kind": "demo", "split": "all"}, held_out_images=1, heldout_crops_per_image=1,
    )
    produce_mae_pretrain(definition, out_dir, StageContext(log=lambda _m: None))
    return out_dir


def bench_steps(args: argparse.Namespace) -> None:
    import tempfile

    from resweep.config import ExperimentConfig
    from resweep.methods import METHODS, MethodContext, World
    from resweep.models import create_model

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    scale = 2
    gt_side = args.patch * scale
    tmp = Path(tempfile.mkdtemp(prefix="bench-mae-"))
    artifacts = {
        "vit": _encoder_artifact("vit", args.arch, 96, tmp / "vit"),
        "conv": _encoder_artifact("conv", args.arch, 96, tmp / "conv"),
    }
    variants: dict[str, tuple[str | None, dict, str | None]] = {
        "Original": (None, {}, None),
        "+CTMAE": ("mae_loss", {"variant": "ctmae"}, "vit"),
        "+P_CTMAE": ("mae_loss", {"variant": "ctmae", "patch": True}, "vit"),
        "+CCMAE": ("mae_loss", {"variant": "ccmae"}, "conv"),
        "+P_CCMAE": ("mae_loss", {"variant": "ccmae", "patch": True}, "conv"),
        "+VGG": ("perceptual", {"allow_random_features": True}, None),
    }
    setups = {}
    for label, (method_name, knobs, artifact) in variants.items():
        methods = {method_name: knobs} if method_name else {}
        cfg = ExperimentConfig.from_dict({"model": {"name": args.model}, "task": {"kind": "sr", "scale": scale},
                                          "methods": methods})
        torch.manual_seed(0)
        model = create_model(args.model, scale=scale).to(device)
        method = None
        if method_name:
            context = MethodContext(
                config=cfg, model=model, task=None, world=World(device=device),  # type: ignore[arg-type]
                cache_dir=tmp, log=lambda _m: None,
                artifacts={"encoder": artifacts[artifact]} if artifact else {},
            )
            method = METHODS.get(method_name)(cfg.methods[method_name], context).to(device)
        setups[label] = (model, method, torch.optim.Adam(model.parameters(), lr=1e-4))

    g = torch.Generator().manual_seed(0)
    lq = torch.rand(args.batch, 3, args.patch, args.patch, generator=g).to(device)
    gt = torch.rand(args.batch, 3, gt_side, gt_side, generator=g).to(device)
    clock = _cpu_or_wall(device)

    def step(label: str, iteration: int) -> float:
        model, method, optimizer = setups[label]
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = clock()
        pred = model(lq)
        loss = torch.nn.functional.l1_loss(pred, gt)
        if method is not None:
            loss = loss + sum(method.loss_terms(pred, {"lq": lq, "gt": gt}, iteration).values())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return clock() - start

    for label in setups:  # warm-up
        step(label, 0)
    times: dict[str, list[float]] = {k: [] for k in setups}
    for i in range(args.repeats):
        for label in setups:
            times[label].append(step(label, i + 1))
    ref = statistics.median(times["Original"])
    what = "wall" if device.type == "cuda" else "cpu"
    print(f"{args.model} x{scale}, batch {args.batch}, LR {args.patch}x{args.patch} (GT {gt_side}), "
          f"MAE arch '{args.arch}', VGG-16 to relu2_2 (perceptual's defaults), {device}, {args.repeats} steps each (round robin)")
    print(f"{'variant':<12}{what + ' ms/step (median)':>24}{'x Original':>12}")
    for label in setups:
        t = statistics.median(times[label])
        print(f"{label:<12}{t * 1e3:>24.1f}{t / ref:>12.2f}")


if __name__ == "__main__":
    main()
