"""What ECO costs and what it buys, side by side, on real images (CPU by default).

    python benchmarks/bench_eco.py [--images 48] [--iters 240] [--seeds 0 1 2] [--batches 2 16]

1. Teacher: a small EDSR trained vanilla through the engine (``teacher: {train: ...}``, the
   same code path a study uses), its CSet5 PSNR printed next to bicubic.
2. Centroid precompute (teacher over every whole image + D(ŷc), written to the cache) vs one
   plain pass over the data (decode + degrade every whole image), and the cost of a cache hit.
3. Step time, vanilla vs ECO, same model / batch / patch: data loading per batch (ECO reads two
   more crops from the memory-mapped cache), the blend alone (``transform_batch``), and the
   forward + backward + optimiser step. Steps of the two alternate, so load from other
   processes hits both alike; medians are reported.
4. The paper's Fig. 4 claim at toy scale: short runs at batch 2 vs 16, vanilla vs ECO, a few
   seeds, evaluated on CSet5 every ``--eval-every`` steps. Spread of the early evaluations
   (first half of training): std over seeds at each evaluation (mean over evaluations), and
   the step-to-step fluctuation of a run's curve (std of successive PSNR differences, mean
   over seeds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import ExperimentConfig  # noqa: E402
from resweep.data import build_train_dataset  # noqa: E402
from resweep.engine.trainer import Trainer  # noqa: E402
from resweep.stages import PRODUCED, REUSED, parse_stage, plan, prepare_local, produce  # noqa: E402
from resweep.stages.store import ArtifactStore  # noqa: E402

DATASETS = Path("/work/shared/datasets")


class Curve:
    """A reporter that keeps the evaluation PSNR-Y by iteration."""

    def __init__(self, metric: str):
        self.metric = metric
        self.points: dict[int, float] = {}
        self.alpha: dict[int, float] = {}

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        if self.metric in metrics:
            self.points[int(metrics["iteration"])] = float(metrics[self.metric])
        if "eco.alpha" in metrics:
            self.alpha[int(metrics["iteration"])] = float(metrics["eco.alpha"])


def quiet(_msg: str) -> None:
    pass


def base_config(args: argparse.Namespace, *, batch: int, patch: int, iters: int, seed: int = 0) -> dict[str, Any]:
    return {
        "name": "bench-eco",
        "task": {"kind": "sr", "scale": 2, "quantize_input": False},
        "model": {"name": args.model},
        "data": {
            "train": {"kind": "folder", "path": str(args.train), "max_images": args.images},
            "patch_size": patch,
            "batch_size": batch,
        },
        "optim": {"name": "adam", "lr": args.lr},
        "schedule": {"kind": "constant"},
        "train": {"iterations": iters, "log_every": args.eval_every, "seed": seed, "device": "cpu"},
        "eval": {
            "every": args.eval_every,
            "max_side": args.eval_side,
            "sets": [{"kind": "folder", "path": str(args.eval), "name": "CSet5"}],
        },
    }


def teacher_config(args: argparse.Namespace) -> dict[str, Any]:
    cfg = base_config(args, batch=16, patch=args.patch, iters=args.teacher_iters)
    cfg["name"] = "bench-eco-teacher"
    cfg["model"] = {"name": args.teacher_model}
    cfg["optim"]["lr"] = 1e-3
    cfg["schedule"] = {"kind": "cosine"}
    cfg["eval"]["every"] = args.teacher_iters
    return cfg


def eco_config(args: argparse.Namespace, cfg: dict[str, Any]) -> dict[str, Any]:
    return {**cfg, "methods": {"eco": {"teacher": {"train": teacher_config(args)}}}}


def median_ms(values: list[float]) -> float:
    return 1000 * statistics.median(values)


# --------------------------------------------------------------------------- 1 + 2
def teacher_and_precompute(args: argparse.Namespace, cache_dir: Path) -> dict[str, float]:
    # the teacher as a study makes it: a `train` stage in the artifact store
    (teacher_stage,), _ = plan({"teacher": parse_stage({"kind": "train", "experiment": teacher_config(args)})})
    t0 = time.perf_counter()
    record = produce(teacher_stage, str(cache_dir), device=torch.device("cpu"), log=quiet)
    teacher_seconds = time.perf_counter() - t0
    teacher_dir = ArtifactStore(cache_dir).fetch(teacher_stage.key, cache_dir)
    psnr = record.metrics.get("eval.CSet5.psnr_y", float("nan"))
    bicubic = record.metrics.get("eval.CSet5.psnr_y_baseline", float("nan"))
    print(f"\n[1] teacher {args.teacher_model}: {args.teacher_iters} its in {teacher_seconds:.1f} s; "
          f"CSet5 PSNR-Y {psnr:.2f} dB (bicubic {bicubic:.2f} dB)")

    # The plain pass: what one epoch of whole-image decode + degrade costs.
    cfg = ExperimentConfig.from_dict(base_config(args, batch=16, patch=args.patch, iters=1))
    from resweep.degradations.tasks import build_task

    task = build_task(cfg.task)
    dataset = build_train_dataset(cfg, task)
    t0 = time.perf_counter()
    for i in range(len(dataset)):
        dataset.full_pair(i)
    plain = time.perf_counter() - t0

    # Precompute into a fresh cache (teacher given by its checkpoint: no training timed here).
    from resweep.methods import MethodContext, World
    from resweep.methods.eco import ECO
    from resweep.models import create_model

    fresh = Path(tempfile.mkdtemp(prefix="eco-bench-fresh-"))
    weights = {"weights": str(teacher_dir / "weights.pt"), "model": args.teacher_model}
    eco_cfg = cfg.with_overrides({"methods.eco": {"teacher": weights}})

    def build() -> tuple[ECO, list[Any]]:
        artifacts, records = prepare_local(eco_cfg, fresh, device=torch.device("cpu"), log=quiet)
        ctx = MethodContext(config=eco_cfg, model=create_model(args.model, scale=2), task=task,
                            world=World(), cache_dir=fresh, log=quiet,
                            artifacts={k.removeprefix("eco."): v for k, v in artifacts.items()})
        return ECO(eco_cfg.methods["eco"], ctx), records

    t0 = time.perf_counter()
    method, records = build()
    method.wrap_train_dataset(build_train_dataset(cfg, task))
    compute = time.perf_counter() - t0
    assert [r.status for r in records] == [PRODUCED] and len(method.store) == len(dataset)
    t0 = time.perf_counter()
    method, records = build()
    method.wrap_train_dataset(build_train_dataset(cfg, task))
    hit = time.perf_counter() - t0
    assert [r.status for r in records] == [REUSED]
    size = sum(p.stat().st_size for p in fresh.rglob("*.npy"))
    print(f"\n[2] {len(dataset)} images of {args.train.name}")
    print(f"    plain pass (decode + degrade)      {plain:7.2f} s  ({1000 * plain / len(dataset):.0f} ms/img)")
    print(f"    centroid precompute (teacher + D)  {compute:7.2f} s  ({1000 * compute / len(dataset):.0f} ms/img, "
          f"x{compute / plain:.1f} the plain pass; once per sweep)")
    print(f"    cache hit (hashing + open)         {hit:7.2f} s")
    print(f"    cache size                         {size / 2**20:7.1f} MiB (uint8 ŷc + float32 D(ŷc))")
    return {"plain": plain, "compute": compute, "hit": hit}


# --------------------------------------------------------------------------- 3
def step_times(args: argparse.Namespace, cache_dir: Path) -> None:
    b, p, n = args.step_batch, args.step_patch, args.step_reps
    cfgs = {
        "vanilla": ExperimentConfig.from_dict(base_config(args, batch=b, patch=p, iters=10_000)),
        "eco": ExperimentConfig.from_dict(eco_config(args, base_config(args, batch=b, patch=p, iters=10_000))),
    }
    trainers = {k: Trainer(c, cache_dir=cache_dir, log=quiet) for k, c in cfgs.items()}
    loaders = {k: iter(t._loader()) for k, t in trainers.items()}
    data: dict[str, list[float]] = {k: [] for k in trainers}
    step: dict[str, list[float]] = {k: [] for k in trainers}
    blend: list[float] = []
    for rep in range(n + 3):  # round-robin; the first 3 are warm-up
        for k, trainer in trainers.items():
            t0 = time.perf_counter()
            batch = next(loaders[k])
            t1 = time.perf_counter()
            trainer.training_step(batch)
            trainer.optimizer.step()
            t2 = time.perf_counter()
            if rep >= 3:
                data[k].append(t1 - t0)
                step[k].append(t2 - t1)
            if k == "eco" and rep >= 3:
                method = trainer.methods["eco"]
                t0 = time.perf_counter()
                for _ in range(10):
                    method.transform_batch(batch, 5000)
                blend.append((time.perf_counter() - t0) / 10)
    print(f"\n[3] step time, {args.model} x2, batch {b}, LR patch {p}, CPU x{torch.get_num_threads()} thread(s), "
          f"median of {n}")
    print(f"    {'':12s} {'data/batch':>11s} {'step (fwd+bwd+opt)':>19s} {'total':>9s}")
    for k in trainers:
        d, s = median_ms(data[k]), median_ms(step[k])
        print(f"    {k:12s} {d:9.1f} ms {s:17.1f} ms {d + s:7.1f} ms")
    vd, vs = median_ms(data["vanilla"]), median_ms(step["vanilla"])
    ed, es = median_ms(data["eco"]), median_ms(step["eco"])
    print(f"    ECO / vanilla: data x{ed / vd:.2f}, step x{es / vs:.2f}, total x{(ed + es) / (vd + vs):.2f}; "
          f"the blend alone (in the step) {median_ms(blend):.2f} ms")


# --------------------------------------------------------------------------- 4
def spread(args: argparse.Namespace, cache_dir: Path) -> None:
    metric = "eval.CSet5.psnr_y"
    curves: dict[tuple[int, str], list[Curve]] = {}
    t_start = time.perf_counter()
    for batch in args.batches:
        for variant in ("vanilla", "eco"):
            for seed in args.seeds:
                cfg = base_config(args, batch=batch, patch=args.patch, iters=args.iters, seed=seed)
                if variant == "eco":
                    cfg = eco_config(args, cfg)
                curve = Curve(metric)
                Trainer(ExperimentConfig.from_dict(cfg), reporter=curve, cache_dir=cache_dir, log=quiet).fit()
                curves.setdefault((batch, variant), []).append(curve)
    seconds = time.perf_counter() - t_start
    half = args.iters // 2
    print(f"\n[4] early-training spread (Fig. 4), {args.model}, {args.iters} its, eval every {args.eval_every} on "
          f"CSet5 (centre {args.eval_side}px), seeds {args.seeds}, {len(args.seeds) * 2 * len(args.batches)} runs "
          f"in {seconds:.0f} s; early = iterations <= {half}")
    print(f"    {'batch':>5s} {'method':8s} {'early PSNR':>11s} {'std/seeds':>10s} {'fluct.':>8s} "
          f"{'final PSNR':>11s} {'std/seeds':>10s}")
    for (batch, variant), cs in curves.items():
        its = sorted(cs[0].points)
        early = [it for it in its if it <= half]
        at = {it: [c.points[it] for c in cs] for it in its}
        mean_early = statistics.mean(statistics.mean(at[it]) for it in early)
        std_seeds = statistics.mean(statistics.pstdev(at[it]) for it in early)
        steps = list(zip(early, early[1:], strict=False))
        fluct = (
            statistics.mean(statistics.pstdev([c.points[b] - c.points[a] for a, b in steps]) for c in cs)
            if steps
            else float("nan")
        )
        final = at[its[-1]]
        print(f"    {batch:5d} {variant:8s} {mean_early:9.2f} dB {std_seeds:8.3f} dB {fluct:6.3f} dB "
              f"{statistics.mean(final):9.2f} dB {statistics.pstdev(final):8.3f} dB")
    print("    (per-evaluation means, seed-averaged curves:)")
    for (batch, variant), cs in curves.items():
        its = sorted(cs[0].points)
        row = " ".join(f"{statistics.mean(c.points[it] for c in cs):5.2f}" for it in its)
        print(f"    b{batch:<3d}{variant:8s} {row}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=Path, default=DATASETS / "CBSD432")
    parser.add_argument("--eval", type=Path, default=DATASETS / "CSet5")
    parser.add_argument("--images", type=int, default=48, help="training images (first N of --train)")
    parser.add_argument("--model", default="edsr_tiny")
    parser.add_argument("--teacher-model", default="edsr_tiny")
    parser.add_argument("--teacher-iters", type=int, default=400)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--patch", type=int, default=24, help="LR patch of the runs (2 and 4)")
    parser.add_argument("--iters", type=int, default=240)
    parser.add_argument("--eval-every", type=int, default=20)
    parser.add_argument("--eval-side", type=int, default=128)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batches", type=int, nargs="+", default=[2, 16])
    parser.add_argument("--step-batch", type=int, default=16)
    parser.add_argument("--step-patch", type=int, default=48)
    parser.add_argument("--step-reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: a fresh temporary folder")
    parser.add_argument("--skip", nargs="*", default=[], choices=["precompute", "step", "spread"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for folder in (args.train, args.eval):
        if not folder.is_dir():
            sys.exit(f"data folder not found: {folder} (give --train / --eval)")
    cache_dir = args.cache_dir or Path(tempfile.mkdtemp(prefix="eco-bench-"))
    print(f"cache: {cache_dir}")
    start = time.perf_counter()
    if "precompute" not in args.skip:
        teacher_and_precompute(args, cache_dir)
    if "step" not in args.skip:
        step_times(args, cache_dir)
    if "spread" not in args.skip:
        spread(args, cache_dir)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
