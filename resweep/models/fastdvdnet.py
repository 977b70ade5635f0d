"""FastDVDnet (Tassano et al., CVPR 2020): a two-stage multi-frame video denoiser.

Five noisy frames and a noise-level map in, the centre frame out. Stage 1 applies one
denoising block (weights shared) to the three overlapping triplets (0,1,2), (1,2,3), (2,3,4);
stage 2 applies a second block to the three stage-1 outputs. Each block is a small U-Net
(two stride-2 downsamplings, pixel-shuffle upsampling) that predicts the residual of its
middle input frame. No motion compensation: the U-Nets learn to align implicitly.

Input layout: the packed window of :mod:`resweep.degradations.video_denoise`
``(B, 3*5 + 1, H, W)``; output ``(B, 3, H, W)``. Any ``H, W`` (padded to a multiple of 4
inside). ``target="all"`` restores every frame of the window (the window re-centred on each
frame, mirrored at its ends) and outputs ``(B, 15, H, W)``.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from resweep.degradations.video_denoise import unpack_window, window_indices
from resweep.errors import ConfigError
from resweep.models.common import RestorationNet, crop_to, pad_to_multiple
from resweep.models.registry import register_model


def _conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class DenoisingBlock(nn.Module):
    """FastDVDnet's DenBlock: three frames + noise map -> residual-denoised middle frame.

    Without ``out_conv`` (stage 2, whose final conv is the model's ``last_layer``) it
    returns the last feature map instead of the denoised frame.
    """

    def __init__(self, channels: tuple[int, int, int], per_frame: int, out_conv: bool = True) -> None:
        super().__init__()
        c0, c1, c2 = channels
        # Each frame with its own copy of the noise map, convolved in its own group first.
        self.inc = nn.Sequential(
            *_conv_bn_relu(3 * 4, 3 * per_frame, groups=3), *_conv_bn_relu(3 * per_frame, c0)
        )
        self.down0 = nn.Sequential(*_conv_bn_relu(c0, c1, stride=2), *_conv_bn_relu(c1, c1))
        self.down1 = nn.Sequential(*_conv_bn_relu(c1, c2, stride=2), *_conv_bn_relu(c2, c2))
        self.up1 = nn.Sequential(*_conv_bn_relu(c2, c2), nn.Conv2d(c2, 4 * c1, 3, padding=1), nn.PixelShuffle(2))
        self.up0 = nn.Sequential(*_conv_bn_relu(c1, c1), nn.Conv2d(c1, 4 * c0, 3, padding=1), nn.PixelShuffle(2))
        self.features = nn.Sequential(*_conv_bn_relu(c0, c0))
        self.out = nn.Conv2d(c0, 3, 3, padding=1) if out_conv else None

    def forward(self, frames: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        """``frames (B, 3, 3, H, W)``, ``noise_map (B, 1, H, W)``, H and W multiples of 4."""
        b, _, _, h, w = frames.shape
        x = torch.cat([frames, noise_map.unsqueeze(1).expand(b, 3, 1, h, w)], dim=2)
        x0 = self.inc(x.reshape(b, 12, h, w))
        x1 = self.down0(x0)
        x2 = self.down1(x1)
        x1 = self.up1(x2) + x1
        feats = self.features(self.up0(x1) + x0)
        if self.out is None:
            return feats
        return frames[:, 1] - self.out(feats)


@register_model("fastdvdnet_tiny", channels=(8, 16, 32), per_frame=8)
@register_model("fastdvdnet", channels=(32, 64, 128), per_frame=30)
class FastDVDnet(RestorationNet):
    """Two-stage multi-frame denoiser, 5 frames + noise map in (scale 1)."""

    supported_scales = (1,)
    task = "video_denoise"

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        channels: tuple[int, int, int] | list[int] = (32, 64, 128),
        per_frame: int = 30,
        num_frames: int = 5,
        target: Literal["centre", "all"] = "centre",
    ) -> None:
        super().__init__(scale)
        if in_channels != 3:
            raise ConfigError(f"FastDVDnet denoises RGB frames (in_channels 3), got {in_channels}")
        if num_frames != 5:
            raise ConfigError(f"FastDVDnet reads 5 frames (two stages of triplets), got num_frames={num_frames}")
        if target not in ("centre", "all"):
            raise ConfigError(f"FastDVDnet target must be 'centre' or 'all', got {target!r}")
        channels = tuple(int(c) for c in channels)
        if len(channels) != 3:
            raise ConfigError(f"FastDVDnet channels must be three widths, got {channels}")
        self.num_frames = num_frames
        self.target = target
        self.stage1 = DenoisingBlock(channels, per_frame)
        self.stage2 = DenoisingBlock(channels, per_frame, out_conv=False)
        self.last_layer = nn.Conv2d(channels[0], 3, 3, padding=1)

    def _centre(self, frames: torch.Tensor, noise_map: torch.Tensor) -> torch.Tensor:
        triplets = [self.stage1(frames[:, i : i + 3], noise_map) for i in range(3)]
        middle = torch.stack(triplets, dim=1)
        return middle[:, 1] - self.last_layer(self.stage2(middle, noise_map))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, (h, w) = pad_to_multiple(x, 4)
        frames, noise_map = unpack_window(x, self.num_frames)
        if self.target == "centre":
            return crop_to(self._centre(frames, noise_map), h, w)
        outs = []
        for k in range(self.num_frames):
            idx = window_indices(k, self.num_frames, self.num_frames)
            outs.append(self._centre(frames[:, idx], noise_map))
        return crop_to(torch.cat(outs, dim=1), h, w)


__all__ = ["DenoisingBlock", "FastDVDnet"]
