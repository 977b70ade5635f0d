"""Train EDSR-baseline x2 on CBSD432 for a few hundred iterations and compare with bicubic on Set5.

Usage: python scripts/reproduce_edsr_baseline.py [--iterations N] [--datasets ../shared/datasets]
Runs in a plain process (the same engine Ray Train workers run) and prints the Y-PSNR curve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from resweep.config import ExperimentConfig, read_yaml
from resweep.engine.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=400)
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = read_yaml(ROOT / "configs" / "edsr_baseline_x2_cbsd432.yaml")
    datasets = Path(args.datasets)
    data["data"]["train"]["path"] = str(datasets / "CBSD432")
    data["eval"]["sets"][0]["path"] = str(datasets / "CSet5")
    data["train"]["iterations"] = args.iterations
    config = ExperimentConfig.from_dict(data, source="edsr_baseline_x2_cbsd432.yaml")
    outcome = Trainer(config).fit()
    psnr = outcome.metrics.get("eval.Set5.psnr_y")
    bicubic = outcome.metrics.get("eval.Set5.psnr_y_baseline")
    print(f"\nEDSR-baseline x2, {args.iterations} iterations: Set5 Y-PSNR {psnr:.2f} dB vs bicubic {bicubic:.2f} dB "
          f"({psnr - bicubic:+.2f} dB)")


if __name__ == "__main__":
    main()
