"""Blocks shared by the model zoo: base class, mean shift, upsamplers, padding helpers."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from resweep.errors import ConfigError

# Per-channel RGB mean of DIV2K train HR images, as used by EDSR/RCAN/SwinIR.
DIV2K_RGB_MEAN: tuple[float, float, float] = (0.4488, 0.4371, 0.4040)
# ImageNet statistics, as torchvision/timm pretrained networks (VGG, ResNet, MAE) expect.
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def default_mean(in_channels: int) -> tuple[float, ...]:
    """DIV2K mean for RGB; 0.5 per channel otherwise (centres e.g. grayscale inputs)."""
    return DIV2K_RGB_MEAN if in_channels == 3 else (0.5,) * in_channels


class RestorationNet(nn.Module):
    """Base class of the zoo's networks.

    Input is ``(B, C, h, w)`` in [0, 1]; output ``(B, C, h * scale, w * scale)``, not clamped.
    Every subclass stores its final convolution as the attribute named by
    ``last_layer_name`` (always ``"last_layer"``) and calls it directly in ``forward``, so
    proxy evaluation can swap it with ``setattr(model, model.last_layer_name, new_conv)``.
    """

    #: Scales ``create_model`` accepts for this architecture (``None``: any positive int).
    supported_scales: ClassVar[tuple[int, ...] | None] = None
    #: ``"sr"`` (super-resolution first) or ``"denoise"`` (residual restoration at scale 1).
    task: ClassVar[str] = "sr"
    last_layer_name: ClassVar[str] = "last_layer"

    last_layer: nn.Conv2d

    def __init__(self, scale: int) -> None:
        super().__init__()
        if self.supported_scales is not None and scale not in self.supported_scales:
            supported = ", ".join(str(s) for s in self.supported_scales)
            raise ConfigError(
                f"{type(self).__name__} does not support scale={scale}; supported: {supported}"
            )
        self.scale = int(scale)
        # create_model overwrites this with the registered name (e.g. "edsr_tiny").
        self.arch_name = type(self).__name__.lower()

    def get_last_layer(self) -> nn.Conv2d:
        return getattr(self, self.last_layer_name)


class MeanShift(nn.Module):
    """Subtracts (``sign=-1``) or adds back (``sign=+1``) a per-channel mean.

    ``img_range`` rescales the centred signal: EDSR/RCAN were designed for [0, 255] inputs, so
    with ``img_range=255`` their default initialisation keeps its original behaviour while the
    model's interface stays [0, 1]. The mean is a buffer, not a frozen conv, so optimisers and
    weight decay never see it.
    """

    def __init__(self, mean: Sequence[float], img_range: float = 1.0, sign: int = -1) -> None:
        super().__init__()
        if sign not in (-1, 1):
            raise ValueError(f"sign must be -1 or +1, got {sign}")
        self.sign = sign
        self.img_range = float(img_range)
        self.register_buffer(
            "mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.sign < 0:
            return (x - self.mean) * self.img_range
        return x / self.img_range + self.mean

    def extra_repr(self) -> str:
        return f"sign={self.sign:+d}, img_range={self.img_range:g}"


def conv3x3(in_channels: int, out_channels: int, bias: bool = True) -> nn.Conv2d:
    """3x3 convolution with 'same' padding (all zoo convs keep the spatial size)."""
    return nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias)


class ResBlock(nn.Module):
    """EDSR residual block: conv-ReLU-conv, no batch norm, scaled residual.

    ``res_scale`` < 1 (0.1 in full EDSR) keeps very wide networks stable early in training.
    """

    def __init__(self, n_feats: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv3x3(n_feats, n_feats), nn.ReLU(inplace=True), conv3x3(n_feats, n_feats)
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


class Upsampler(nn.Sequential):
    """Pixel-shuffle upsampler: ``log2(scale)`` x2 stages, or one x3 stage.

    Keeps ``n_feats`` channels; scale 1 is the identity (no parameters).
    """

    def __init__(self, scale: int, n_feats: int) -> None:
        layers: list[nn.Module] = []
        if scale == 1:
            pass
        elif scale == 3:
            layers += [conv3x3(n_feats, 9 * n_feats), nn.PixelShuffle(3)]
        elif scale > 1 and scale & (scale - 1) == 0:
            for _ in range(int(math.log2(scale))):
                layers += [conv3x3(n_feats, 4 * n_feats), nn.PixelShuffle(2)]
        else:
            raise ConfigError(
                f"pixel-shuffle upsampler supports scale 1, 3 or a power of 2, got {scale}"
            )
        super().__init__(*layers)


def pad_to_multiple(
    x: torch.Tensor, multiple: int | tuple[int, int]
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pads the bottom/right of ``x`` so h and w are multiples of ``multiple``.

    Returns the padded tensor and the original ``(h, w)`` for :func:`crop_to`. Reflection
    avoids the artificial edges zero padding would create; inputs too small to reflect (pad
    >= size) fall back to edge replication.
    """
    mh, mw = (multiple, multiple) if isinstance(multiple, int) else multiple
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % mh, (-w) % mw
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Crops the top-left ``h`` x ``w`` (undoes :func:`pad_to_multiple`, after scaling)."""
    return x[..., :h, :w]
