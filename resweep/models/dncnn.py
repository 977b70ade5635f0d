"""DnCNN (Zhang et al., 2017, "Beyond a Gaussian Denoiser"): a plain conv-BN-ReLU stack that
predicts the noise; the clean estimate is the input minus that prediction."""

from __future__ import annotations

import torch
from torch import nn

from resweep.errors import ConfigError
from resweep.models.common import RestorationNet, conv3x3
from resweep.models.registry import register_model


@register_model("dncnn_tiny", n_layers=5, n_feats=16)
@register_model("dncnn", n_layers=17, n_feats=64)
class DnCNN(RestorationNet):
    """``n_layers`` convs: conv+ReLU, (n_layers - 2) x conv+BN+ReLU, conv. Scale 1 only."""

    supported_scales = (1,)
    task = "denoise"

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        n_layers: int = 17,
        n_feats: int = 64,
        batch_norm: bool = True,
    ) -> None:
        super().__init__(scale)
        if n_layers < 2:
            raise ConfigError(f"DnCNN needs n_layers >= 2, got {n_layers}")
        layers: list[nn.Module] = [conv3x3(in_channels, n_feats), nn.ReLU(inplace=True)]
        for _ in range(n_layers - 2):
            # A conv followed by BN needs no bias: BN's shift replaces it.
            layers.append(conv3x3(n_feats, n_feats, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(n_feats))
            layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)
        self.last_layer = conv3x3(n_feats, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        noise = self.last_layer(self.body(x))
        return x - noise
