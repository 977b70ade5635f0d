"""A residual U-Net for denoising (Ronneberger et al., 2015, adapted to restoration).

With ``scale > 1`` a pixel-shuffle upsampler before the last conv makes it a joint
denoise + super-resolution model; the residual is then added to a bicubic upsampling of the
input. Two knobs (``model.kwargs``) give RCL's literal proxy protocol for SR (Table 2):

- ``sr_head: bicubic_input`` upsamples the input bicubically first and runs the scale-1 U-Net
  on it: no upsampler, the same parameters as the scale-1 network (a pretrained backbone loads
  without a new head, and ``train.trainable: last_layer`` then trains its last conv only).
  ``pixel_shuffle`` (default) is the learned upsampler above.
- ``global_residual: false`` returns the network's output as is instead of adding the
  (upsampled) input back.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from resweep.errors import ConfigError
from resweep.models.common import (
    RestorationNet,
    Upsampler,
    conv3x3,
    crop_to,
    pad_to_multiple,
)
from resweep.models.registry import register_model


class DoubleConv(nn.Sequential):
    """Two 3x3 conv + LeakyReLU (leaky: residual targets are signed, avoid dead units)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            conv3x3(in_channels, out_channels),
            nn.LeakyReLU(0.2, inplace=True),
            conv3x3(out_channels, out_channels),
            nn.LeakyReLU(0.2, inplace=True),
        )


class UpBlock(nn.Module):
    """Transposed-conv x2 upsampling, concatenation with the skip, DoubleConv."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, out_channels, 2, stride=2)
        self.conv = DoubleConv(2 * out_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


@register_model("unet_tiny", levels=3, base_feats=8)
@register_model("unet", levels=4, base_feats=32)
class UNet(RestorationNet):
    """``levels`` resolutions (``levels - 1`` max-pool downsamplings), channels doubling per level.

    Inputs are padded to a multiple of ``2 ** (levels - 1)`` and the output cropped back.
    """

    supported_scales = (1, 2, 3, 4, 8)
    task = "denoise"

    def __init__(
        self,
        scale: int = 1,
        in_channels: int = 3,
        levels: int = 4,
        base_feats: int = 32,
        sr_head: str = "pixel_shuffle",
        global_residual: bool = True,
    ) -> None:
        super().__init__(scale)
        if levels < 1:
            raise ConfigError(f"UNet needs levels >= 1, got {levels}")
        if sr_head not in ("pixel_shuffle", "bicubic_input"):
            raise ConfigError(f"UNet sr_head must be 'pixel_shuffle' or 'bicubic_input', got {sr_head!r}",
                              field="model.kwargs.sr_head")
        self.bicubic_input = sr_head == "bicubic_input" and scale > 1
        self.global_residual = bool(global_residual)
        feats = [base_feats * 2**i for i in range(levels)]
        self.multiple = 2 ** (levels - 1)
        self.encoders = nn.ModuleList(
            DoubleConv(c_in, c_out)
            for c_in, c_out in zip([in_channels, *feats[:-1]], feats, strict=True)
        )
        self.pool = nn.MaxPool2d(2)
        self.decoders = nn.ModuleList(
            UpBlock(c_in, c_out) for c_in, c_out in zip(feats[:0:-1], feats[-2::-1], strict=True)
        )
        self.upsample: nn.Module = nn.Identity() if self.bicubic_input else Upsampler(scale, base_feats)
        self.last_layer = conv3x3(base_feats, in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bicubic_input:
            x = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        inp, (h, w) = pad_to_multiple(x, self.multiple)
        skips: list[torch.Tensor] = []
        y = inp
        for i, encoder in enumerate(self.encoders):
            if i > 0:
                y = self.pool(y)
            y = encoder(y)
            skips.append(y)
        skips.pop()  # the bottleneck output is not a skip
        for decoder in self.decoders:
            y = decoder(y, skips.pop())
        out_scale = 1 if self.bicubic_input else self.scale
        residual = crop_to(self.last_layer(self.upsample(y)), h * out_scale, w * out_scale)
        if not self.global_residual:
            return residual
        if out_scale == 1:
            return x + residual
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + residual
