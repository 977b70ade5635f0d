"""FastDVDnet, clip evaluation (sliding window, per-clip records) and a tiny video training run."""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch
from torch import nn

from resweep.config import DatasetSpec, ExperimentConfig, TaskConfig
from resweep.data.video import build_clip_eval_set
from resweep.degradations.tasks import build_task
from resweep.degradations.video_denoise import pack_window, unpack_window, window_indices
from resweep.engine.evaluate import Evaluator
from resweep.errors import ConfigError
from resweep.models import create_model, list_models, model_info
from tests.test_video_data import video_config, write_clip

T = 5


def test_fastdvdnet_is_registered_and_reads_every_frame_and_the_noise_map():
    assert {"fastdvdnet", "fastdvdnet_tiny"} <= set(list_models("fastdvdnet*"))
    assert model_info("fastdvdnet_tiny")["task"] == "video_denoise"
    torch.manual_seed(0)
    model = create_model("fastdvdnet_tiny").eval()
    frames = torch.rand(1, T, 3, 18, 22, requires_grad=True)
    sigma = torch.tensor([0.1], requires_grad=True)
    out = model(pack_window(frames, sigma))
    assert out.shape == (1, 3, 18, 22)  # any size: padded to a multiple of 4 inside
    out.sum().backward()
    for k in range(T):
        assert frames.grad[0, k].abs().sum() > 0, f"frame {k} does not reach the output"
    assert sigma.grad.abs() > 0
    with pytest.raises(ValueError, match="packed window of 5 frames"):
        model(torch.rand(1, 3 * 3 + 1, 16, 16))
    with pytest.raises(ConfigError, match="reads 5 frames"):
        create_model("fastdvdnet_tiny", num_frames=3)
    assert isinstance(model.last_layer, nn.Conv2d)


def test_fastdvdnet_all_frames_target_is_the_centre_model_on_recentred_windows():
    torch.manual_seed(0)
    centre = create_model("fastdvdnet_tiny").eval()
    every = create_model("fastdvdnet_tiny", target="all").eval()
    every.load_state_dict(centre.state_dict())
    frames = torch.rand(2, T, 3, 16, 16)
    x = pack_window(frames, 0.08)
    out = every(x).reshape(2, T, 3, 16, 16)
    for k in range(T):
        expected = centre(pack_window(frames[:, window_indices(k, T, T)], 0.08))
        assert torch.allclose(out[:, k], expected, atol=1e-6)
    assert torch.allclose(out[:, T // 2], centre(x), atol=1e-6)


class PickFrame(nn.Module):
    """A 'model' that returns frame ``k`` of its window: makes the sliding window visible."""

    def __init__(self, k: int):
        super().__init__()
        self.k = k
        self.scale = 1

    def forward(self, x):
        return unpack_window(x, T)[0][:, self.k]


def psnr64(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10 * math.log10(1 / mse)


def test_clip_evaluation_slides_the_window_and_averages_frames_per_clip(tmp_path):
    write_clip(tmp_path / "set" / "long", 9, h=24, w=24)
    write_clip(tmp_path / "set" / "short", 4, h=24, w=24)
    task = build_task(TaskConfig(kind="video_denoise", scale=1, noise_sigma=20))
    clip_set = build_clip_eval_set(DatasetSpec(kind="video_folder", path=tmp_path / "set"), task, seed=0)
    evaluator = Evaluator([clip_set], task, crop_border=0, device=torch.device("cpu"))

    identity = evaluator.evaluate(PickFrame(T // 2), iteration=7)
    for m in ("psnr", "ssim", "psnr_y"):  # the centre noisy frame is the no-learning reference
        assert identity.means[f"eval.set.{m}"] == pytest.approx(identity.means[f"eval.set.{m}_baseline"])

    first = evaluator.evaluate(PickFrame(0), iteration=7)
    clip_means = []
    for clip, record in zip(clip_set.clips, first.per_image, strict=True):
        n = clip.gt.shape[0]
        # frame t is restored from the window centred on t: PickFrame(0) returns frame t-2, mirrored
        expected = [psnr64(clip.noisy[window_indices(t, T, n)[0]].clamp(0, 1), clip.gt[t]) for t in range(n)]
        assert record["clip"] == record["image"] == clip.name
        assert record["frames"] == n and record["first_frame"] == "0000"
        assert record["psnr_frames"] == pytest.approx(expected, abs=1e-4)
        assert record["psnr"] == pytest.approx(sum(expected) / n, abs=1e-4)
        clip_means.append(sum(expected) / n)
    # the set's value: mean over clips (a 9-frame and a 4-frame clip weigh the same)
    assert first.means["eval.set.psnr"] == pytest.approx(sum(clip_means) / 2, abs=1e-4)
    assert first.means["eval.set.psnr"] < identity.means["eval.set.psnr"]


def test_tiny_video_training_writes_per_clip_rows(tmp_path, reporter):
    from resweep.engine.records import RunRecorder
    from resweep.engine.trainer import Trainer

    cfg = ExperimentConfig.from_dict(video_config())
    trainer = Trainer(cfg, reporter=reporter)
    assert trainer.fit().status == "finished"
    recorder = RunRecorder(tmp_path)
    for report in reporter.reports:
        recorder.add(report)
    rows = pq.read_table(tmp_path / "per_image.parquet").to_pylist()
    assert sorted(r["clip"] for r in rows) == ["astronaut", "coffee"]
    assert all(r["frames"] == 3 and len(r["psnr_frames"]) == 3 for r in rows)
    final = reporter.reports[-1]
    assert final["eval.video-demo-eval.psnr_baseline"] == pytest.approx(
        sum(r["psnr_baseline"] for r in rows) / 2
    )
