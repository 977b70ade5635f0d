"""Video: samples/s of the training-window loader, and step time of the video model with and
without a spatiotemporal-MAE feature loss.

    python benchmarks/bench_video.py [--clips FOLDER] [--seconds S] [--steps N] [--patch P] [--full]

Loader: ``VideoWindowDataset`` (5-frame windows, one crop/flip per window, noise on the fly)
decoding PNG frames every time vs keeping decoded frames in memory (uint8); rounds of the two
alternate so load from other processes hits both alike.

Step: forward + backward + Adam step of FastDVDnet (tiny; ``--full`` adds the full size) at the
given patch, Original (pixel L1) vs +CTMAE-video (plus the ``mae_loss`` method's term, called as
the trainer calls it: variant ``ctmae_video`` on a ``mae_video_pretrain`` artifact of
``--mae-arch``), for the centre-frame output (the restored frame among its clean neighbours
goes through the encoder) and for ``target: all`` (the 5 restored frames).

Measured 2026-11-23 on the 2-core project machine under heavy load from other sessions (load
average 8-13), one thread, batch 8, fastdvdnet_tiny, centre-frame output:

    patch 48, MAE 'tiny':   Original 282 ms/step, +CTMAE-video 310 ms (x1.10)
    patch 32, MAE 'tiny':   Original 152 ms/step, +CTMAE-video 236 ms (x1.55)
    patch 64, MAE 'small':  Original 582 ms/step, +CTMAE-video 1720 ms (x2.96)
    (target: all: x4.5-6.4 for Original, x5.1-9.6 with the MAE term, against centre Original)

Timings are medians of rounds; on a shared machine (this project's: 2 cores, seven engineers)
only the ratios measured side by side in one run mean much.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from resweep.config import TaskConfig  # noqa: E402
from resweep.data.video import VideoWindowDataset  # noqa: E402
from resweep.data.video_clips import VideoSource, discover_clips  # noqa: E402
from resweep.data.video_demo import demo_video_source  # noqa: E402
from resweep.degradations.tasks import build_task  # noqa: E402
from resweep.degradations.video_denoise import pack_window  # noqa: E402
from resweep.models import create_model  # noqa: E402

DEFAULT_CLIPS = Path("/work/shared/datasets/video")


def loader(source: VideoSource, patch: int, batch: int, seed: int = 0):
    task = build_task(TaskConfig(kind="video_denoise", scale=1, noise_sigma=30))
    dataset = VideoWindowDataset(source, task, patch, augment=True)
    rng = np.random.default_rng(seed)
    keys = ((int(rng.integers(len(dataset))), int(rng.integers(2**62))) for _ in range(10**9))
    batches = iter(DataLoader(dataset, batch_size=batch, sampler=keys, num_workers=0))
    next(batches)
    return batches


def bench_loader(args: argparse.Namespace) -> None:
    if args.clips.is_dir():
        make = lambda: VideoSource(args.clips.name, list(discover_clips(args.clips)))  # noqa: E731
    else:
        print(f"{args.clips} not found: the demo clips stand in")
        make = lambda: demo_video_source("all")  # noqa: E731
    plain, cached = make(), make()
    cached.set_cache()
    print(f"loader: {plain!r}, 5-frame windows, patch {args.patch}, batch {args.batch}")
    pipes = {"decode every time": loader(plain, args.patch, args.batch),
             "decoded frames cached": loader(cached, args.patch, args.batch)}
    for _ in range(10):  # warm the cache (it fills as frames are first read)
        next(pipes["decoded frames cached"])
    rates: dict[str, list[float]] = {k: [] for k in pipes}
    for _ in range(args.rounds):
        for name, batches in pipes.items():
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.seconds:
                count += next(batches)["lq"].shape[0]
            rates[name].append(count / (time.perf_counter() - start))
    base = statistics.median(rates["decode every time"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"  {name:24s} {med:8.1f} samples/s   x{med / base:.2f}")


def video_mae_method(arch: str, target: str, artifact: Path) -> Any:
    """The ``mae_loss`` method (variant ``ctmae_video``) on a ``mae_video_pretrain`` artifact of
    ``arch`` (one pretraining step: the weights do not change the cost)."""
    from resweep.config import ExperimentConfig
    from resweep.methods import MethodContext, World
    from resweep.methods.mae_loss import MaeLoss
    from resweep.stages import StageContext
    from resweep.stages.mae_video_pretrain import MaeVideoPretrainStage, produce_mae_video_pretrain

    if not (artifact / "encoder.pt").is_file():
        definition = MaeVideoPretrainStage(arch=arch, num_frames=5, crop=32, steps=1, batch_size=2,
                                           data={"kind": "video_demo", "split": "all"})
        produce_mae_video_pretrain(definition, artifact, StageContext(log=lambda _m: None))
    cfg = ExperimentConfig.from_dict({
        "task": {"kind": "video_denoise", "scale": 1, "noise_sigma": 30, "video": {"target": target}},
        "model": {"name": "fastdvdnet_tiny", "kwargs": {"target": target}},
        "data": {"train": {"kind": "video_demo", "split": "train"}},
        "methods": {"mae_loss": {"variant": "ctmae_video"}},
    })
    context = MethodContext(config=cfg, model=torch.nn.Identity(), task=None, world=World(),  # type: ignore[arg-type]
                            cache_dir=artifact, log=lambda _m: None, artifacts={"encoder": artifact})
    return MaeLoss(cfg.methods["mae_loss"], context)


def bench_steps(args: argparse.Namespace) -> None:
    import tempfile

    from resweep.data.video import CLEAN_WINDOW_KEY

    torch.manual_seed(0)
    b, p = args.batch, args.patch
    frames = torch.rand(b, 5, 3, p, p)
    x = pack_window(frames, 30 / 255)
    scratch = Path(tempfile.mkdtemp(prefix="bench-video-"))
    methods = {t: video_mae_method(args.mae_arch, t, scratch / args.mae_arch) for t in ("centre", "all")}

    def step_fn(model, optimizer, target: str, mae: bool):
        gt = frames.reshape(b, 15, p, p) if target == "all" else frames[:, 2]
        batch = {"lq": x, "gt": gt, CLEAN_WINDOW_KEY: frames}

        def step() -> None:
            pred = model(x)
            loss = (pred - gt).abs().mean()  # the engine's pixel L1
            if mae:  # through the method, as the trainer calls it
                loss = loss + methods[target].loss_terms(pred, batch, 0)["mae"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return step

    print(f"step time: batch {b}, patch {p}, 5 frames, video MAE '{args.mae_arch}', "
          f"{torch.get_num_threads()} thread(s)")
    for name in ("fastdvdnet_tiny", "fastdvdnet") if args.full else ("fastdvdnet_tiny",):
        arms = {}
        for target in ("centre", "all"):
            model = create_model(name, target=target)
            optimizer = torch.optim.Adam(model.parameters(), 1e-4)
            for mae in (False, True):
                label = f"{'Original' if not mae else '+CTMAE-video'} ({target})"
                arms[label] = step_fn(model, optimizer, target, mae)
        times: dict[str, list[float]] = {k: [] for k in arms}
        for fn in arms.values():
            fn()  # warm-up
        for _ in range(args.steps):
            for label, fn in arms.items():
                start = time.perf_counter()
                fn()
                times[label].append(time.perf_counter() - start)
        base = statistics.median(times["Original (centre)"])
        print(f"  {name}")
        for label, t in times.items():
            med = statistics.median(t)
            print(f"    {label:28s} {med * 1000:8.1f} ms/step   x{med / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=DEFAULT_CLIPS)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--full", action="store_true", help="also time the full-size FastDVDnet")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--skip-steps", action="store_true")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--mae-arch", choices=("tiny", "small"), default="small",
                        help="size of the video MAE used as the loss")
    args = parser.parse_args()
    if not args.skip_loader:
        bench_loader(args)
    if not args.skip_steps:
        bench_steps(args)


if __name__ == "__main__":
    main()
