"""A small real run of RCL's label-efficiency table (Tab. 3) on CBSD432 -> CBSD68, without Ray.

    python benchmarks/proxy_rcl_table3.py --out /tmp/rcl_table3 [--labels 10 100 432] [--seeds 0 1 2]

1. Pretrain the backbone once with the ``rcl`` method (EMD) on the noisy CBSD432 patches (no
   clean image read); its final evaluation on CBSD68 is the "0 labels" row (the pretrained
   network used directly as a denoiser).
2. For each number of labelled images (``data.train.max_images``) and each seed, fine-tune
   with L1 on (noisy, clean) pairs: "SL" from random weights, "RCL+SL" from the pretrained
   weights (``model.init_from``; ``--trainable last_layer`` for the strict proxy protocol).
   The pretraining's Fig. 2 gaps (before/after) go to ``diagnostics/`` and ``results.json``.
3. Print the table (mean ± std over seeds, PSNR on CBSD68, RGB) with the paper's numbers, the
   noisy input's PSNR beside them, and write ``results.json``.

Everything is at proxy scale (a small U-Net, short schedules, crops of 24 px, random
consistency-encoder features unless ImageNet ResNet-50 weights are found): the numbers show the
direction of each gap, not the paper's absolute values. Needs ../shared/datasets.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import ExperimentConfig  # noqa: E402
from resweep.engine.trainer import Trainer  # noqa: E402
from resweep.stages.train import DIAGNOSTICS_DIR, write_diagnostics  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets"
# Tab. 3 of the paper (VOC, PSNR dB): labels -> (SL, RCL+SL); 0 labels = RCL alone.
PAPER = {0: (None, 22.62), 10: (20.74, 28.20), 100: (27.19, 30.24), 1000: (31.31, 32.09), 10000: (33.41, 33.85)}


def base_config(args: argparse.Namespace, **overrides) -> dict:
    cfg = {
        "name": "rcl-table3-proxy",
        "task": {"kind": "hetero_denoise", "scale": 1},
        "model": {"name": "unet", "kwargs": {"levels": args.levels, "base_feats": args.base_feats}},
        "data": {"train": {"kind": "folder", "path": str(DATA / "CBSD432")}, "patch_size": args.patch,
                 "batch_size": args.batch},
        "optim": {"name": "adam", "lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-7},
        "schedule": {"kind": "constant"},
        "loss": {"pixel": "l1"},
        "train": {"iterations": args.finetune_iters, "log_every": 50, "seed": 0, "device": "cpu"},
        "eval": {"every": 10_000, "max_side": args.eval_side,
                 "sets": [{"kind": "folder", "path": str(DATA / "CBSD68"), "name": "CBSD68"}]},
    }
    for path, value in overrides.items():
        node = cfg
        parts = path.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return cfg


def run(cfg: dict, log_prefix: str, diagnostics: dict | None = None) -> tuple[dict, Trainer]:
    """Train ``cfg``; with ``diagnostics`` (a dict), collect the methods' diagnostics before and
    after training into it, as the ``train`` stage does (RCL: the Fig. 2 gaps)."""
    t0 = time.time()
    trainer = Trainer(ExperimentConfig.from_dict(cfg), log=lambda m: print(f"[{log_prefix}] {m}", flush=True))
    if diagnostics is not None:
        diagnostics["start"] = trainer.diagnostics("start")
    outcome = trainer.fit()
    if diagnostics is not None:
        diagnostics["end"] = trainer.diagnostics("end")
    print(f"[{log_prefix}] {outcome.status} in {time.time() - t0:.0f}s: "
          f"PSNR {outcome.metrics.get('eval.CBSD68.psnr', float('nan')):.2f}", flush=True)
    return outcome.metrics, trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 100, 432])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--pretrain-iters", type=int, default=400)
    parser.add_argument("--finetune-iters", type=int, default=200)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--base-feats", type=int, default=16)
    parser.add_argument("--patch", type=int, default=48)
    parser.add_argument("--crop", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--eval-side", type=int, default=96)
    parser.add_argument("--trainable", choices=["all", "last_layer"], default="all")
    parser.add_argument("--encoder", default="resnet50")
    args = parser.parse_args()
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)

    weights = args.out / "rcl_pretrained.pt"
    pretrain_cfg = base_config(args, **{
        "train.iterations": args.pretrain_iters,
        "methods": {"rcl": {"crop_size": args.crop, "crop_overlap": 0.5, "encoder": args.encoder,
                            "allow_random_features": True}},
    })
    by_phase: dict = {}
    metrics, trainer = run(pretrain_cfg, "pretrain rcl", by_phase)
    torch.save(trainer.model.state_dict(), weights)
    # Fig. 2: share of positive EMD(negative) - EMD(positive) gaps before/after pretraining
    fig2 = write_diagnostics(args.out / DIAGNOSTICS_DIR, by_phase)
    print("Fig. 2: " + ", ".join(f"{k} {v:.1%}" for k, v in fig2.items()), flush=True)
    notes = [n for m in trainer.methods.values() for n in m.notes()]
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "notes": notes,
                     "pretrain": metrics, "fig2": fig2, "rows": {}}
    noisy = metrics.get("eval.CBSD68.psnr_baseline")

    for labels in args.labels:
        for arm in ("SL", "RCL+SL"):
            values = []
            for seed in args.seeds:
                overrides = {"data.train.max_images": labels, "train.seed": seed}
                if arm == "RCL+SL":
                    overrides["model.init_from"] = str(weights)
                    overrides["train.trainable"] = args.trainable
                    overrides["model.reinit_last_layer"] = args.trainable == "last_layer"
                m, _ = run(base_config(args, **overrides), f"{arm} {labels} labels seed {seed}")
                values.append(m["eval.CBSD68.psnr"])
            results["rows"][f"{arm}@{labels}"] = values
            (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))

    def cell(values: list[float]) -> str:
        if len(values) == 1:
            return f"{values[0]:.2f}"
        return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"

    print(f"\nCBSD68 PSNR (RGB, centre {args.eval_side} px), {len(args.seeds)} seeds; noisy input {noisy:.2f} dB")
    print(f"{'labels':>7} | {'SL':>14} | {'RCL+SL':>14} | {'gap':>6} || paper SL / RCL+SL (VOC, labels)")
    print(f"{0:>7} | {'-':>14} | {metrics['eval.CBSD68.psnr']:>14.2f} | {'':>6} || - / {PAPER[0][1]}")
    paper_keys = sorted(k for k in PAPER if k)
    for labels in args.labels:
        sl, rcl = results["rows"][f"SL@{labels}"], results["rows"][f"RCL+SL@{labels}"]
        gap = statistics.mean(rcl) - statistics.mean(sl)
        nearest = min(paper_keys, key=lambda k: abs(k - labels))
        p = PAPER[nearest]
        print(f"{labels:>7} | {cell(sl):>14} | {cell(rcl):>14} | {gap:+6.2f} || {p[0]} / {p[1]} "
              f"({nearest}: {p[1] - p[0]:+.2f})")
    (args.out / "results.json").write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
