"""RCL's Fig. 2: the density of d(negative) − d(positive) before and after pretraining.

    python benchmarks/rcl_fig2_gaps.py --weights /tmp/rcl_table3/rcl_pretrained.pt --out fig2.html
        [--levels 3 --base-feats 16 --crop 24 --batches 8 --batch 8]

Noisy CBSD68 crops (heteroscedastic noise as in pretraining), residuals of a randomly
initialised U-Net vs the pretrained one, EMD between the two overlapping crops of each image
(positive) and the second crops of the others (negatives). Prints quantiles and the fraction
of positive gaps, and writes a plotly histogram (the paper: the mass moves to positive values).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import TaskConfig  # noqa: E402
from resweep.data.images import read_image  # noqa: E402
from resweep.degradations.tasks import build_task  # noqa: E402
from resweep.losses.distribution_distances import DistributionDistance  # noqa: E402
from resweep.methods.rcl import distance_gaps  # noqa: E402
from resweep.models import create_model  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "CBSD68"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--levels", type=int, default=3)
    parser.add_argument("--base-feats", type=int, default=16)
    parser.add_argument("--crop", type=int, default=24)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)
    task = build_task(TaskConfig(kind="hetero_denoise", scale=1))
    files = sorted(DATA.glob("*.png"))[: args.batch * args.batches]
    side = args.crop * 2
    images = []
    for i, path in enumerate(files):
        img = read_image(path)
        h, w = img.shape[-2:]
        clean = img[:, (h - side) // 2 : (h - side) // 2 + side, (w - side) // 2 : (w - side) // 2 + side]
        images.append(task.degrade(clean, torch.Generator().manual_seed(i)))
    noisy = torch.stack(images)
    kwargs = {"levels": args.levels, "base_feats": args.base_feats}
    torch.manual_seed(0)
    random_model = create_model("unet", **kwargs).eval()
    pretrained = create_model("unet", **kwargs).eval()
    pretrained.load_state_dict(torch.load(args.weights, map_location="cpu", weights_only=True))
    distance = DistributionDistance("emd")
    shift = args.crop // 2
    results = {}
    for label, model in (("random init", random_model), ("pretrained", pretrained)):
        gaps = torch.cat([
            distance_gaps(model, noisy[b : b + args.batch], distance, args.crop, shift,
                          torch.Generator().manual_seed(b))
            for b in range(0, len(noisy), args.batch)
        ])
        results[label] = gaps
        q = torch.quantile(gaps, torch.tensor([0.1, 0.5, 0.9]))
        print(f"{label:>12}: n={gaps.numel()}, positive {float((gaps > 0).float().mean()):.1%}, "
              f"median {q[1].item():+.5f} (10% {q[0].item():+.5f}, 90% {q[2].item():+.5f})")
    if args.out is not None:
        import plotly.graph_objects as go

        fig = go.Figure([go.Histogram(x=v.tolist(), name=k, opacity=0.6, histnorm="probability density")
                         for k, v in results.items()])
        fig.update_layout(barmode="overlay", title="RCL Fig. 2: EMD(negative) − EMD(positive)",
                          xaxis_title="EMD gap", yaxis_title="density")
        fig.write_html(args.out)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
