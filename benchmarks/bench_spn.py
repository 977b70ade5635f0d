"""Cost of an SPN training step vs vanilla L1, side by side in one run.

    python benchmarks/bench_spn.py [--device cpu|cuda|auto] [--batch 4] [--repeats 5]

Variants (``edsr_baseline`` x2 on 48x48 LR patches by default; forward + backward + Adam step,
plus SPN's ``after_step``): vanilla L1; SPN with K = 1, 2, 4 as implemented (φ(ŷ) once per step,
the negatives' features as ``negative_features`` defaults to: one no-grad VGG pass per
negative); SPN K=4 with the other choice (one VGG pass over the K negatives concatenated);
and SPN computed the authors' way (φ(ŷ) recomputed for every negative) for the same K values;
SPN K=max with the forward and the feature path (negatives' forward and VGG) in bf16 autocast
(``loss_precision: bf16``) beside the default fp32 one. Precision as the engine sets it: on CUDA
the vanilla forward runs in bf16 (``train.amp``), SPN's in fp32 (``needs_fp32_forward``) unless
it opts into bf16; on CPU only the bf16 variant's feature path runs under (CPU) bf16 autocast.

Feature scale: on one batch (the model's prediction and its K negatives), the mean L1 feature
distance per layer and the weighted SPN distance with taps before and after the ReLU (the
default changed to after, as the authors' code): does the change move the SPN loss scale?

Timing: steps of all variants alternate round-robin (so load from other processes on a shared
machine hits them alike). On CPU the cost is the median CPU time of this process per step
(robust to other processes competing for the cores; wall-clock median and minimum are printed
beside it), on CUDA the median wall time; ratios are to vanilla.
FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` counts one step of each variant (convs and
matmuls, forward and backward), and the least possible cost is assembled from components:
vanilla step + K negative forwards + (K+1) VGG forwards + 1 VGG backward (ours) vs
vanilla step + K negative forwards + 2K VGG forwards + K VGG backwards (authors').
VGG weights: the real file when one is found, random otherwise (same cost).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import ExperimentConfig  # noqa: E402
from resweep.engine.amp import bf16_autocast, loss_autocast  # noqa: E402
from resweep.methods import MethodContext, World  # noqa: E402
from resweep.methods.spn import SPN, SPNConfig  # noqa: E402
from resweep.models import create_model  # noqa: E402


def authors_distance(spn: SPN, prediction: torch.Tensor, negatives: list[torch.Tensor]) -> torch.Tensor:
    """The authors' loop: for every negative, φ(ŷ) and φ(n_k) afresh, then Σ_l w_l·L1."""
    assert spn.features is not None
    total = prediction.new_zeros(())
    for n in negatives:
        anchor = spn.features(prediction)
        with torch.no_grad():
            neg = spn.features(n)
        for layer, w in zip(spn.cfg.feature_layers, spn.cfg.layer_weights, strict=True):
            total = total + w * F.l1_loss(anchor[layer].float(), neg[layer].float())
    return total / len(negatives)


class Variant:
    """One training setup with its own model, optimiser and (optionally) SPN method."""

    def __init__(self, label: str, args: argparse.Namespace, k: int, mode: str) -> None:
        self.label, self.k, self.mode = label, k, mode
        self.device = args.device
        self.cuda = args.device.type == "cuda"
        exp = ExperimentConfig.from_dict(
            {
                "model": {"name": args.model},
                "task": {"kind": "sr", "scale": args.scale},
                "train": {"seed": 0},
            }
        )
        torch.manual_seed(0)
        self.model = create_model(args.model, scale=args.scale).to(self.device)
        if self.cuda:
            self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-4)
        self.spn: SPN | None = None
        if k:
            cfg = SPNConfig(
                negative_step_set=[100, 500, 1000, 2000][:k] if k <= 4 else [100] * k,
                allow_random_features=True,
            )
            if mode == "batched":
                cfg.negative_features = "batched"
            if mode == "bf16":
                cfg.loss_precision = "bf16"
            context = MethodContext(
                config=exp,
                model=self.model,
                task=None,  # type: ignore[arg-type]  # SPN does not use the task
                world=World(device=self.device),
                cache_dir=Path("."),
                log=lambda _m: None,
            )
            self.spn = SPN(cfg, context).to(self.device)
        g = torch.Generator().manual_seed(1)
        p, s = args.patch, args.scale
        self.batch = {
            "lq": torch.rand(args.batch, 3, p, p, generator=g).to(self.device),
            "gt": torch.rand(args.batch, 3, p * s, p * s, generator=g).to(self.device),
        }
        self.iteration = 0
        self.times: list[float] = []  # wall seconds per step
        self.cpu_times: list[float] = []  # this process's CPU seconds per step

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.cuda:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def step(self) -> None:
        """One training step, as the engine's ``training_step`` + optimiser + ``after_step``."""
        lq = self.batch["lq"]
        if self.cuda:
            lq = lq.contiguous(memory_format=torch.channels_last)
        fp32_forward = self.spn is not None and self.spn.needs_fp32_forward
        with bf16_autocast(self.device.type, self.cuda and not fp32_forward):
            prediction = self.model(lq)
        prediction = prediction.float()
        total = F.l1_loss(prediction, self.batch["gt"])
        if self.spn is not None:
            amp = self.cuda or self.mode == "bf16"  # CPU: bf16 autocast for the bf16 variant only
            with loss_autocast(self.device.type, amp, self.spn.cfg.loss_precision):
                if self.mode == "authors":
                    negs = self.spn.negative_outputs(lq)
                    total = total - self.spn.cfg.weight * authors_distance(self.spn, prediction, negs)
                else:
                    total = total + self.spn.loss_terms(prediction, self.batch, self.iteration)["spn"]
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()
        self.iteration += 1
        if self.spn is not None:
            self.spn.after_step(self.model, self.iteration)

    def timed_step(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)
        start, cpu = time.perf_counter(), time.process_time()
        self.step()
        if self.cuda:
            torch.cuda.synchronize(self.device)
        self.times.append(time.perf_counter() - start)
        self.cpu_times.append(time.process_time() - cpu)

    def cost(self) -> float:
        """Median seconds per step: CPU time on CPU (other processes on a shared machine do not
        inflate it), wall time on CUDA (the GPU's time is what counts there)."""
        return statistics.median(self.times if self.cuda else self.cpu_times)

    def flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            self.step()
        return counter.get_total_flops()


def count(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def component_flops(v: Variant) -> dict[str, int]:
    """FLOPs of the parts: one negative forward, one VGG forward and one VGG backward (HR batch)."""
    assert v.spn is not None and v.spn.features is not None
    features = v.spn.features
    lq = v.batch["lq"]
    hr = torch.rand_like(v.batch["gt"])
    neg_fwd = count(lambda: v.spn.negatives[0](lq) if v.spn else None)

    def vgg_fwd() -> None:
        with torch.no_grad():
            features(hr)

    def vgg_fwd_bwd() -> None:
        x = hr.clone().requires_grad_(True)
        out = features(x)
        sum(o.float().mean() for o in out.values()).backward()

    fwd = count(vgg_fwd)
    return {"neg_fwd": neg_fwd, "vgg_fwd": fwd, "vgg_bwd": count(vgg_fwd_bwd) - fwd}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    parser.add_argument("--model", default="edsr_baseline")
    parser.add_argument("--scale", type=int, default=2)
    parser.add_argument("--patch", type=int, default=48, help="LR patch side")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4], help="numbers of negatives")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    name = "cuda" if args.device == "auto" and torch.cuda.is_available() else args.device
    if name == "auto":
        name = "cpu"
    args.device = torch.device(name)
    kmax = max(args.ks)

    variants = [Variant("vanilla L1", args, 0, "ours")]
    variants += [Variant(f"SPN K={k}", args, k, "ours") for k in args.ks]
    variants.append(Variant(f"SPN K={kmax} batched negatives' VGG", args, kmax, "batched"))
    variants.append(Variant(f"SPN K={kmax} bf16 feature path", args, kmax, "bf16"))
    variants += [Variant(f"SPN K={k} authors' way", args, k, "authors") for k in args.ks]

    where = torch.cuda.get_device_name(args.device) if args.device.type == "cuda" else (
        f"CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"{args.model} x{args.scale}, LR {args.patch}x{args.patch}, batch {args.batch}, "
        f"{where}{', bf16 autocast' if args.device.type == 'cuda' else ''}; "
        f"median of {args.repeats} steps after {args.warmup} warm-up"
    )
    flops = {v.label: v.flops() for v in variants}  # also a warm-up step
    for _ in range(args.warmup):
        for v in variants:
            v.step()
    for _ in range(args.repeats):
        for v in variants:  # round robin
            v.timed_step()

    base_t = variants[0].cost()
    base_f = flops[variants[0].label]
    kind = "wall" if args.device.type == "cuda" else "CPU-time"
    print(
        f"\nms/step = median {kind} per step{'' if args.device.type == 'cuda' else ' (wall median/min beside it)'}"
    )
    print(
        f"{'variant':34s} {'ms/step':>9s} {'x vanilla':>9s} {'GFLOP':>8s} {'x vanilla':>9s}"
        f" {'wall med':>9s} {'wall min':>9s}"
    )
    for v in variants:
        t = v.cost()
        f = flops[v.label]
        print(
            f"{v.label:34s} {t * 1e3:9.1f} {t / base_t:9.2f} {f / 1e9:8.1f} {f / base_f:9.2f}"
            f" {statistics.median(v.times) * 1e3:9.1f} {min(v.times) * 1e3:9.1f}"
        )

    parts = component_flops(variants[1])
    print(
        f"\ncomponents (GFLOP): vanilla step {base_f / 1e9:.1f}, negative forward "
        f"{parts['neg_fwd'] / 1e9:.1f}, VGG forward {parts['vgg_fwd'] / 1e9:.1f}, "
        f"VGG backward (input grad) {parts['vgg_bwd'] / 1e9:.1f}"
    )
    print(
        f"\n{'K':>2s} {'least FLOPs ours':>17s} {'authors':>9s} {'FLOP ratio':>11s} "
        f"{'time ours':>10s} {'authors':>9s} {'time ratio':>11s}   (authors / ours)"
    )
    by_label = {v.label: v for v in variants}
    for k in args.ks:
        ours = base_f + k * parts["neg_fwd"] + (k + 1) * parts["vgg_fwd"] + parts["vgg_bwd"]
        theirs = base_f + k * parts["neg_fwd"] + 2 * k * parts["vgg_fwd"] + k * parts["vgg_bwd"]
        t_ours = by_label[f"SPN K={k}"].cost()
        t_theirs = by_label[f"SPN K={k} authors' way"].cost()
        print(
            f"{k:2d} {ours / 1e9:14.1f} GF {theirs / 1e9:6.1f} GF {theirs / ours:11.2f} "
            f"{t_ours * 1e3:8.0f}ms {t_theirs * 1e3:7.0f}ms {t_theirs / t_ours:11.2f}"
        )
    # The negatives' VGG pass alone (no model, no backward): the batching decision isolated.
    spn = by_label[f"SPN K={kmax}"].spn
    assert spn is not None and spn.features is not None
    negs = spn.negative_outputs(variants[0].batch["lq"])
    sync = (lambda: torch.cuda.synchronize(args.device)) if args.device.type == "cuda" else (lambda: None)
    passes: dict[str, list[float]] = {"per_negative": [], "batched": []}
    with torch.no_grad(), variants[0].autocast():
        for r in range(args.repeats + 1):
            for mode, times in passes.items():
                sync()
                start = time.process_time() if not variants[0].cuda else time.perf_counter()
                if mode == "batched":
                    spn.features(torch.cat(negs))
                else:
                    for n in negs:
                        spn.features(n)
                sync()
                if r:  # the first round is a warm-up
                    now = time.process_time() if not variants[0].cuda else time.perf_counter()
                    times.append(now - start)
    print(
        f"\nK={kmax} negatives' VGG pass alone: one per negative "
        f"{statistics.median(passes['per_negative']) * 1e3:.0f} ms, one batched "
        f"{statistics.median(passes['batched']) * 1e3:.0f} ms"
    )
    t_p = by_label[f"SPN K={kmax}"].cost()
    t_b = by_label[f"SPN K={kmax} batched negatives' VGG"].cost()
    print(
        f"\nK={kmax} negatives' VGG features: one pass per negative (default) {t_p * 1e3:.0f} "
        f"ms/step, one batched pass {t_b * 1e3:.0f} ms/step (batched / per-negative = "
        f"{t_b / t_p:.2f})"
    )
    t_16 = by_label[f"SPN K={kmax} bf16 feature path"].cost()
    print(
        f"\nK={kmax} precision of SPN's forward and feature path: fp32 (default) {t_p * 1e3:.0f} ms/step, bf16 autocast "
        f"{t_16 * 1e3:.0f} ms/step (bf16 / fp32 = {t_16 / t_p:.2f})"
    )
    feature_scale(by_label[f"SPN K={kmax}"], args)


def feature_scale(v: Variant, args: argparse.Namespace) -> None:
    """Mean L1 feature distance of ŷ to its negatives, taps before vs after the ReLU."""
    from resweep.losses.feature_nets import VGGFeatures

    assert v.spn is not None and v.spn.features is not None
    cfg = v.spn.cfg
    lq = v.batch["lq"]
    with torch.no_grad():
        prediction = v.model(lq).float()
        negatives = v.spn.negative_outputs(lq)
    src = v.spn.features
    print(
        f"\nSPN distance on one batch (K={len(negatives)}, VGG weights: "
        f"{'RANDOM (no ImageNet file found)' if src.random_weights else src.weights_path}); "
        f"pixel L1 to GT {F.l1_loss(prediction, v.batch['gt']).item():.4f}"
    )
    print(f"{'taps':14s} " + " ".join(f"{layer:>9s}" for layer in cfg.feature_layers) + f" {'weighted':>9s} {'λ·weighted':>11s}")
    totals = {}
    for before in (True, False):
        net = VGGFeatures(
            cfg.feature_net, cfg.feature_layers, before_relu=before, weights=src.weights_path,
            allow_random=src.random_weights, seed=0,
        ).to(args.device)
        if src.random_weights:
            net.load_state_dict(src.state_dict())  # the same random weights as the method's
        with torch.no_grad():
            anchor = net(prediction)
            negs = [net(n) for n in negatives]
        per_layer = [
            sum((anchor[layer] - f[layer]).abs().mean().item() for f in negs) / len(negs)
            for layer in cfg.feature_layers
        ]
        total = sum(w * d for w, d in zip(cfg.layer_weights, per_layer, strict=True))
        totals[before] = total
        label = "before ReLU" if before else "after (default)"
        print(f"{label:14s} " + " ".join(f"{d:9.4f}" for d in per_layer) + f" {total:9.4f} {cfg.weight * total:11.3e}")
    print(f"after / before = {totals[False] / totals[True]:.2f} (the scale λ multiplies)")

if __name__ == "__main__":
    main()
