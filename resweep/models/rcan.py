"""RCAN (Zhang et al., 2018, "Image Super-Resolution Using Very Deep Residual Channel Attention
Networks"): residual groups of residual channel-attention blocks."""

from __future__ import annotations

import torch
from torch import nn

from resweep.errors import ConfigError
from resweep.models.common import MeanShift, RestorationNet, Upsampler, conv3x3, default_mean
from resweep.models.registry import register_model


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation: global average pool -> bottleneck 1x1 convs -> sigmoid gate."""

    def __init__(self, n_feats: int, reduction: int) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(n_feats, n_feats // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(n_feats // reduction, n_feats, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(x)


class RCAB(nn.Module):
    """Residual channel-attention block: conv-ReLU-conv-CA plus identity."""

    def __init__(self, n_feats: int, reduction: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(n_feats, n_feats),
            nn.ReLU(inplace=True),
            conv3x3(n_feats, n_feats),
            ChannelAttention(n_feats, reduction),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class ResidualGroup(nn.Module):
    """``n_blocks`` RCABs and a conv, wrapped by a short skip connection."""

    def __init__(self, n_feats: int, n_blocks: int, reduction: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *(RCAB(n_feats, reduction, res_scale) for _ in range(n_blocks)),
            conv3x3(n_feats, n_feats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


@register_model("rcan_tiny", n_groups=2, n_blocks=2, n_feats=16, reduction=4)
@register_model("rcan", n_groups=10, n_blocks=20, n_feats=64, reduction=16)
class RCAN(RestorationNet):
    """Head conv -> ``n_groups`` residual groups (+ long skip) -> pixel shuffle -> conv."""

    supported_scales = (1, 2, 3, 4, 8)

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        n_groups: int = 10,
        n_blocks: int = 20,
        n_feats: int = 64,
        reduction: int = 16,
        res_scale: float = 1.0,
        img_range: float = 255.0,
    ) -> None:
        super().__init__(scale)
        if n_feats // reduction < 1:
            raise ConfigError(f"RCAN: reduction={reduction} is larger than n_feats={n_feats}")
        mean = default_mean(in_channels)
        self.sub_mean = MeanShift(mean, img_range, sign=-1)
        self.head = conv3x3(in_channels, n_feats)
        self.body = nn.Sequential(
            *(ResidualGroup(n_feats, n_blocks, reduction, res_scale) for _ in range(n_groups)),
            conv3x3(n_feats, n_feats),
        )
        self.upsample = Upsampler(scale, n_feats)
        self.last_layer = conv3x3(n_feats, in_channels)
        self.add_mean = MeanShift(mean, img_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.sub_mean(x))
        x = x + self.body(x)
        return self.add_mean(self.last_layer(self.upsample(x)))
