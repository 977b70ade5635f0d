"""EDSR (Lim et al., 2017, "Enhanced Deep Residual Networks for Single Image Super-Resolution")."""

from __future__ import annotations

import torch
from torch import nn

from resweep.models.common import (
    MeanShift,
    ResBlock,
    RestorationNet,
    Upsampler,
    conv3x3,
    default_mean,
)
from resweep.models.registry import register_model


@register_model("edsr_tiny", n_blocks=2, n_feats=16, res_scale=1.0)
@register_model("edsr", n_blocks=32, n_feats=256, res_scale=0.1)
@register_model("edsr_baseline", n_blocks=16, n_feats=64, res_scale=1.0)
class EDSR(RestorationNet):
    """Head conv -> ``n_blocks`` BN-free residual blocks (+ long skip) -> pixel shuffle -> conv.

    Fully convolutional, so any input size works without padding. Scale 1 drops the upsampler.
    """

    supported_scales = (1, 2, 3, 4, 8)

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        n_blocks: int = 16,
        n_feats: int = 64,
        res_scale: float = 1.0,
        img_range: float = 255.0,
    ) -> None:
        super().__init__(scale)
        mean = default_mean(in_channels)
        self.sub_mean = MeanShift(mean, img_range, sign=-1)
        self.head = conv3x3(in_channels, n_feats)
        self.body = nn.Sequential(
            *(ResBlock(n_feats, res_scale) for _ in range(n_blocks)), conv3x3(n_feats, n_feats)
        )
        self.upsample = Upsampler(scale, n_feats)
        self.last_layer = conv3x3(n_feats, in_channels)
        self.add_mean = MeanShift(mean, img_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.last_layer(self.upsample(x)))
