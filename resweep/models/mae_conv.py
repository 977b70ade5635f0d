"""Convolutional masked autoencoder (CCMAE's loss network); the paper gives no architecture.

Design (small, documented here because the paper does not give one):

* **Masking**: the image is divided evenly into square regions of ``region_size`` pixels (a
  grid; the last row/column of regions may be cut by the border); a fraction ``mask_ratio`` of
  them, drawn per image, is blanked to 0 in the ImageNet-normalised space (the mean colour).
  The whole image, blanked regions included, goes through the network: a CNN cannot skip them
  the way a ViT drops tokens.
* **Encoder**: a 3x3 stem convolution to ``width`` channels, then ``depth`` stages, each a 3x3
  stride-2 convolution (doubling the width, at most ``max_width``) followed by
  ``blocks_per_stage`` residual blocks (conv-GELU-conv + skip). Its output at stage ``k`` has
  stride ``2^(k+1)``; the loss compares the last stage by default. Any input size works.
* **Decoder** (pretraining only): per stage, nearest x2 upsampling + 3x3 conv + GELU back down
  the widths, then a 3x3 convolution to RGB (normalised space). It is lighter than the encoder
  (no residual blocks), as in MAE.
* **Loss**: pixel MSE over the blanked pixels only (the MAE objective in image form), against
  the normalised image or, with ``norm_pix_loss``, against each region normalised by its own
  mean and standard deviation (MAE's normalised-pixel target, per region instead of per patch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from resweep.models.common import IMAGENET_MEAN, IMAGENET_STD


class ConvMaeArch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(32, ge=4, description="channels after the stem")
    depth: int = Field(3, ge=1, description="stride-2 stages")
    blocks_per_stage: int = Field(1, ge=0)
    max_width: int = Field(256, ge=4)
    region_size: int = Field(8, ge=1, description="side of the masked square regions (pixels)")

    def stage_widths(self) -> list[int]:
        return [min(self.width * 2 ** (i + 1), self.max_width) for i in range(self.depth)]


CONV_MAE_ARCHS: dict[str, ConvMaeArch] = {
    "tiny": ConvMaeArch(width=8, depth=2, blocks_per_stage=1, max_width=16, region_size=4),
    "small": ConvMaeArch(width=32, depth=3, blocks_per_stage=1, max_width=128, region_size=8),
    "base": ConvMaeArch(width=64, depth=4, blocks_per_stage=2, max_width=512, region_size=16),
}


def region_mask(
    batch: int, height: int, width: int, region_size: int, mask_ratio: float,
    generator: torch.Generator | None = None, device: torch.device | None = None,
) -> torch.Tensor:
    """``(B, 1, H, W)`` float mask, 1 on the blanked regions: exactly ``round(ratio * n)`` of
    the ``n`` grid regions per image, drawn independently per image."""
    gh, gw = math.ceil(height / region_size), math.ceil(width / region_size)
    n = gh * gw
    masked = min(n, max(0, round(n * mask_ratio)))
    ranks = torch.argsort(torch.rand(batch, n, generator=generator), dim=1).argsort(dim=1)
    grid = (ranks < masked).float().view(batch, 1, gh, gw)
    full = grid.repeat_interleave(region_size, dim=2).repeat_interleave(region_size, dim=3)
    return full[:, :, :height, :width].contiguous().to(device)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.gelu(self.conv1(x)))


class ConvMaeEncoder(nn.Module):
    """CNN encoder; ``forward_features(x, stages)`` returns the listed stages' outputs."""

    def __init__(self, arch: ConvMaeArch, normalize_input: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.normalize_input = normalize_input
        self.stem = nn.Conv2d(3, arch.width, 3, padding=1)
        self.stages = nn.ModuleList()
        in_ch = arch.width
        for out_ch in arch.stage_widths():
            layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1), nn.GELU()]
            layers += [_ResBlock(out_ch) for _ in range(arch.blocks_per_stage)]
            self.stages.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        if not self.normalize_input:
            return x
        return (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    def forward_features(
        self, x: torch.Tensor, stages: Sequence[int] | None = None, mask: torch.Tensor | None = None,
        normalized: bool = False,
    ) -> list[torch.Tensor]:
        """Outputs of the listed stages (0-based, negative from the end; None: the last).

        ``mask`` (B, 1, H, W), 1 = blanked, zeroes those pixels after normalisation.
        """
        if not normalized:
            x = self.normalize(x)
        if mask is not None:
            x = x * (1.0 - mask.to(x.dtype))
        wanted = [len(self.stages) - 1] if stages is None else [s % len(self.stages) for s in stages]
        last = max(wanted)
        h = F.gelu(self.stem(x))
        outs: dict[int, torch.Tensor] = {}
        for i, stage in enumerate(self.stages):
            h = stage(h)
            outs[i] = h
            if i == last:
                break
        return [outs[i] for i in wanted]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)[0]


class ConvMae(nn.Module):
    """Encoder + light decoder; ``forward(imgs)`` returns ``(loss, reconstruction, mask)``."""

    def __init__(self, arch: ConvMaeArch, norm_pix_loss: bool = False) -> None:
        super().__init__()
        self.arch = arch
        self.norm_pix_loss = norm_pix_loss
        self.encoder = ConvMaeEncoder(arch)
        widths = [arch.width, *arch.stage_widths()]
        ups: list[nn.Module] = []
        for i in range(arch.depth, 0, -1):
            ups.append(nn.Sequential(
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i], widths[i - 1], 3, padding=1),
                nn.GELU(),
            ))
        self.decoder = nn.Sequential(*ups)
        self.head = nn.Conv2d(arch.width, 3, 3, padding=1)

    def forward(
        self, imgs: torch.Tensor, mask_ratio: float = 0.75, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, _, h, w = imgs.shape
        stride = 2**self.arch.depth
        if h % stride or w % stride:
            raise ValueError(f"pretraining crops must be multiples of {stride}, got {h}x{w}")
        mask = region_mask(b, h, w, self.arch.region_size, mask_ratio, generator, imgs.device)
        x = self.encoder.normalize(imgs)
        latent = self.encoder.forward_features(x, mask=mask, normalized=True)[0]
        recon = self.head(self.decoder(latent))
        return self.masked_loss(recon, self.target(imgs), mask), recon, mask

    def target(self, imgs: torch.Tensor) -> torch.Tensor:
        """The reconstruction target: the normalised image, or each region normalised (norm_pix)."""
        x = self.encoder.normalize(imgs)
        if not self.norm_pix_loss:
            return x
        r = self.arch.region_size
        b, c, h, w = x.shape
        if h % r or w % r:
            raise ValueError(f"norm_pix_loss needs sides that are multiples of the region {r}, got {h}x{w}")
        cells = x.reshape(b, c, h // r, r, w // r, r)
        mean = cells.mean(dim=(1, 3, 5), keepdim=True)
        var = cells.var(dim=(1, 3, 5), keepdim=True)
        return ((cells - mean) / (var + 1e-6) ** 0.5).reshape(b, c, h, w)

    @staticmethod
    def masked_loss(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Mean squared error over the blanked pixels (all channels)."""
        per_pixel = ((recon - target) ** 2).mean(dim=1, keepdim=True)
        return (per_pixel * mask).sum() / mask.sum().clamp_min(1.0)
