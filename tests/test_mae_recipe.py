"""MAE pretraining recipe (issue 21): MAE's linear lr rule, AdamW, RandomResizedCrop + horizontal
flip, for the image stage (He et al.) and the video stage (MAE-ST)."""

from __future__ import annotations

import math

import pytest
import torch

from resweep.stages.mae_pretrain import MaePretrainStage, _Images
from resweep.stages.mae_video_pretrain import MaeVideoPretrainStage, _Clips
from resweep.stages.masked_pretraining import random_resized_crop_box, resize_square


@pytest.mark.parametrize("hw", [(96, 96), (200, 120), (40, 300)])
def test_random_resized_crop_box_is_torchvisions_draw(hw):
    """The same boxes as torchvision's RandomResizedCrop.get_params fed the same random stream
    (the global RNG seeded alike), fallback included (40x300 often falls back)."""
    from torchvision.transforms import RandomResizedCrop

    h, w = hw
    image = torch.zeros(3, h, w)
    for seed in range(40):
        torch.manual_seed(seed)
        expected = RandomResizedCrop.get_params(image, scale=[0.2, 1.0], ratio=[3 / 4, 4 / 3])
        ours = random_resized_crop_box(h, w, (0.2, 1.0), torch.Generator().manual_seed(seed))
        assert ours == tuple(expected), seed


def test_resize_square_is_torchvisions_bicubic_resized_crop():
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.functional import resized_crop

    img = torch.rand(3, 80, 90)
    top, left, h, w = 7, 11, 50, 61
    ours = resize_square(img[:, top : top + h, left : left + w], 32)
    theirs = resized_crop(img, top, left, h, w, [32, 32], InterpolationMode.BICUBIC, antialias=True)
    assert torch.allclose(ours, theirs.clamp(0, 1), atol=1e-6)


def ramp(h: int, w: int) -> torch.Tensor:
    """uint8 image: channel 0 grows down the rows, channel 1 along the columns."""
    rows = torch.linspace(0, 255, h).view(h, 1).expand(h, w)
    cols = torch.linspace(0, 255, w).view(1, w).expand(h, w)
    return torch.stack([rows, cols, torch.zeros(h, w)]).round().to(torch.uint8)


def crop_statistics(crops: torch.Tensor, full_h: int, full_w: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per crop: rows ascending?, columns descending (flipped)?, fraction of the image's area
    covered (read off the ramps' ranges)."""
    rows, cols = crops[:, 0] * 255, crops[:, 1] * 255
    down = rows[:, -1, :].mean(-1) > rows[:, 0, :].mean(-1)
    flipped = cols[:, :, -1].mean(-1) < cols[:, :, 0].mean(-1)
    span_h = (rows.amax((1, 2)) - rows.amin((1, 2))) / 255 * (full_h - 1) + 1
    span_w = (cols.amax((1, 2)) - cols.amin((1, 2))) / 255 * (full_w - 1) + 1
    return down, flipped, span_h * span_w / (full_h * full_w)


def test_image_pretraining_batches_are_random_resized_crops_with_horizontal_flips_only():
    images = _Images.__new__(_Images)
    images.train = [ramp(120, 160)]
    crops = images.batch(256, 32, torch.Generator().manual_seed(0), (0.2, 1.0))
    assert crops.shape == (256, 3, 32, 32) and crops.min() >= 0 and crops.max() <= 1
    down, flipped, area = crop_statistics(crops, 120, 160)
    assert bool(down.all())  # never flipped vertically (the old recipe flipped half of them)
    assert 0.35 < float(flipped.float().mean()) < 0.65  # flipped horizontally half the time
    # the area of each crop, before resizing, is drawn in [0.2, 1] of the image (read off the
    # resized ramps, whose edge pixels sit half an output pixel inside the crop: ~6% low)
    assert float(area.min()) > 0.2 * 0.9 and float(area.max()) <= 1.03
    assert float(area.max() - area.min()) > 0.5
    # held-out crops stay plain side x side crops at scale 1, unflipped
    images.held_out = [ramp(120, 160)]
    plain = images.held_out_batch(8, 32, seed=0)
    down, flipped, area = crop_statistics(plain, 120, 160)
    assert bool(down.all()) and not bool(flipped.any())
    assert torch.allclose(area, torch.full_like(area, 32 * 32 / (120 * 160)), rtol=0.03)


class RampClip:
    """A clip whose frames are the ramp plus the frame index (in channel 2)."""

    frame_hw = (72, 96)

    def load_crop(self, indices, top, left, height, width):
        frames = []
        for i in indices:
            frame = ramp(*self.frame_hw).float() / 255
            frame[2] = i / 100
            frames.append(frame[:, top : top + height, left : left + width])
        return torch.stack(frames)


def test_video_pretraining_windows_share_one_resized_crop_and_flip():
    definition = MaeVideoPretrainStage(data={"kind": "video_demo"}, num_frames=4, crop=24, batch_size=64)
    clips = _Clips.__new__(_Clips)
    clips.train = [(RampClip(), 0, 20)]
    windows = clips.batch(definition, torch.Generator().manual_seed(0))
    assert windows.shape == (64, 4, 3, 24, 24)
    # every frame of a window is the same crop, flipped alike; only the frame index differs
    assert torch.allclose(windows[:, :, :2], windows[:, :1, :2].expand_as(windows[:, :, :2]), atol=1e-6)
    down, flipped, area = crop_statistics(windows[:, 0], 72, 96)
    assert bool(down.all()) and 0.3 < float(flipped.float().mean()) < 0.7
    assert float(area.min()) > 0.5 * 0.9 and float(area.max() - area.min()) > 0.25  # MAE-ST: 0.5-1


def test_default_learning_rates_follow_the_linear_scaling_rules():
    image = MaePretrainStage(variant="vit", arch="tiny", crop=32, batch_size=64, data={"kind": "demo"})
    assert math.isclose(image.effective_lr, 1.5e-4 * 64 / 256)
    assert image.crop_scale == (0.2, 1.0) and image.weight_decay == 0.05
    video = MaeVideoPretrainStage(data={"kind": "video_demo"}, batch_size=16)
    assert math.isclose(video.effective_lr, 1.6e-3 * 16 / 256) and video.crop_scale == (0.5, 1.0)
    assert MaePretrainStage(variant="vit", arch="tiny", crop=32, lr=1e-3, data={"kind": "demo"}).effective_lr == 1e-3
    with pytest.raises(ValueError, match="crop_scale"):
        MaePretrainStage(variant="vit", arch="tiny", crop=32, crop_scale=(0.0, 1.0), data={"kind": "demo"})


def test_the_stage_trains_with_the_rule_s_lr_and_mae_s_adamw(tmp_path, monkeypatch):
    """What reaches the optimiser: lr = 1.5e-4 x batch / 256, betas (0.9, 0.95), weight decay 0.05
    on the weights and none on biases and norms."""
    from resweep.stages import StageContext
    from resweep.stages import mae_pretrain as stage

    seen: list[torch.optim.Optimizer] = []
    real = torch.optim.AdamW

    def spy(*args, **kwargs):
        opt = real(*args, **kwargs)
        seen.append(opt)
        return opt

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    definition = MaePretrainStage(
        variant="vit", arch="tiny", steps=1, batch_size=32, crop=32, warmup_fraction=0.0,
        data={"kind": "demo", "split": "all"}, held_out_images=2, heldout_crops_per_image=1,
    )
    stage.produce_mae_pretrain(definition, tmp_path, StageContext(log=lambda _m: None))
    (opt,) = seen
    decay, no_decay = opt.param_groups
    assert decay["betas"] == (0.9, 0.95) and decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert math.isclose(decay["initial_lr"], 1.5e-4 * 32 / 256)


def test_method_knobs_make_the_recipe_stage():
    from resweep.config import ExperimentConfig

    from conftest import tiny_config_dict

    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "methods.mae_loss": {"variant": "ctmae", "pretrain": {"arch": "tiny", "crop": 32, "batch_size": 64}},
    }))
    (definition,) = cfg.methods["mae_loss"].stages(cfg).values()
    assert definition.lr is None and math.isclose(definition.effective_lr, 1.5e-4 * 64 / 256)
    assert definition.crop_scale == (0.2, 1.0)


@pytest.mark.parametrize("knobs", ["pretrain", "pretrain_video"])
def test_a_bad_crop_scale_is_refused_at_the_config_naming_the_field(knobs):
    from resweep.config import ExperimentConfig
    from resweep.errors import ConfigError

    from conftest import tiny_config_dict

    with pytest.raises(ConfigError, match=f"methods.mae_loss.{knobs}.crop_scale"):
        ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": {knobs: {"crop_scale": [0.5, 1.5]}}}))
