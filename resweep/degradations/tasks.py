"""Degradation tasks: how a clean (GT) image becomes the network input (LQ).

A :class:`Task` is built from :class:`~resweep.config.TaskConfig` through the ``TASKS``
registry (keyed by ``TaskConfig.kind``; the registry is the one list of task kinds, and a
task's ``allowed_scales`` the one statement of which scales it takes). A new task is a
``Task`` subclass with ``@register_task``, here or in its own module, plus one line in
``BUILTIN_TASKS`` (:mod:`resweep.name_tables`). Every random draw comes from the
``torch.Generator`` the caller passes, on the CPU, and is only then moved to the image's
device, so the same seed gives the same LQ image on any device and in any process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import torch
from torch import Tensor

from resweep import name_tables
from resweep.degradations.imresize import bicubic_downsample, bicubic_upsample
from resweep.registry import Registry

if TYPE_CHECKING:
    from resweep.config import TaskConfig

__all__ = [
    "TASKS",
    "BicubicSR",
    "Denoise",
    "DenoiseSR",
    "HeteroscedasticDenoise",
    "HeteroscedasticDenoiseSR",
    "RealWorldSR",
    "Task",
    "build_task",
    "quantize_8bit",
]


def quantize_8bit(img: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid, as saving the LQ image to a file does."""
    return img.clamp(0.0, 1.0).mul(255.0).round().div(255.0)


def _standard_normal(like: Tensor, generator: torch.Generator) -> Tensor:
    # Drawn on the CPU generator then moved: reproducible whatever device ``like`` is on.
    noise = torch.randn(like.shape, generator=generator, dtype=like.dtype, device="cpu")
    return noise.to(like.device)


class Task:
    """A degradation ``GT -> LQ`` plus the no-learning baseline ``LQ -> GT-sized output``.

    ``degrade`` takes ``(3, H, W)`` or ``(B, 3, H, W)`` float images in [0, 1] with ``H``
    and ``W`` multiples of ``scale`` and returns the LQ image (``H/scale x W/scale``),
    rounded to 8 bits when ``config.quantize_input`` is set.
    """

    kind: ClassVar[str] = ""
    #: the SR factors ``TaskConfig.scale`` may take for this kind (``(1,)``: no resizing)
    allowed_scales: ClassVar[tuple[int, ...]] = (2, 3, 4, 8)
    #: True for tasks whose samples are windows of frames (the network sees a clip)
    is_video: ClassVar[bool] = False

    def __init__(self, config: TaskConfig) -> None:
        self.config = config
        self.scale: int = int(config.scale)

    # ------------------------------------------------------------------ properties
    @property
    def context_margin(self) -> int:
        """HR pixels of context needed around a crop so that degrading the crop with this
        margin and cutting the margin off equals cropping the degraded full image.

        The antialiased bicubic kernel of a x s downsampling spans 4*s HR pixels (half-width
        2*s), already a multiple of s; pointwise degradations need none.
        """
        return 2 * self.scale if self.scale > 1 else 0

    @property
    def is_deterministic(self) -> bool:
        """True when ``degrade`` draws no noise (the generator is then unused)."""
        return True

    # ------------------------------------------------------------------ API
    def degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        if hr.dim() not in (3, 4):
            raise ValueError(f"expected (C,H,W) or (B,C,H,W), got shape {tuple(hr.shape)}")
        if not hr.is_floating_point():
            raise TypeError(f"degrade needs a float image in [0, 1], got {hr.dtype}")
        h, w = hr.shape[-2:]
        if h % self.scale or w % self.scale:
            raise ValueError(
                f"image size {(h, w)} is not a multiple of scale {self.scale}; mod-crop it first"
            )
        lq = self._degrade(hr, generator)
        return quantize_8bit(lq) if self.config.quantize_input else lq

    def baseline(self, lq: Tensor) -> Tensor:
        """The no-learning reference at GT size: MATLAB bicubic upsampling, or the input."""
        if self.scale == 1:
            return lq.clone()
        return bicubic_upsample(lq, self.scale).clamp(0.0, 1.0)

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"


# The kinds' names live in resweep.name_tables (the config checks them there); this is that table.
TASKS: Registry[type[Task]] = name_tables.TASKS


def register_task(cls: type[Task]) -> type[Task]:
    TASKS.register(cls.kind)(cls)
    return cls


@register_task
class BicubicSR(Task):
    """Classical SR: MATLAB ``imresize(hr, 1/s)`` with antialiasing."""

    kind = "sr"

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        return bicubic_downsample(hr, self.scale)


class _GaussianNoiseTask(Task):
    """Adds i.i.d. N(0, sigma/255) per pixel and per channel after an optional downsampling."""

    @property
    def sigma(self) -> float:
        return float(self.config.noise_sigma) / 255.0

    @property
    def is_deterministic(self) -> bool:
        return self.config.noise_sigma == 0

    def _add_noise(self, img: Tensor, generator: torch.Generator) -> Tensor:
        if self.config.noise_sigma == 0:
            return img
        return img + self.sigma * _standard_normal(img, generator)


@register_task
class Denoise(_GaussianNoiseTask):
    """Additive white Gaussian noise, ``noise_sigma`` on the 8-bit scale (scale 1)."""

    kind = "denoise"
    allowed_scales = (1,)

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        return self._add_noise(hr, generator)


@register_task
class DenoiseSR(_GaussianNoiseTask):
    """Joint denoising + SR: bicubic downsampling, then Gaussian noise on the LR image."""

    kind = "denoise_sr"

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        return self._add_noise(bicubic_downsample(hr, self.scale), generator)


@register_task
class RealWorldSR(_GaussianNoiseTask):
    """ECO's "real-world" SR: bicubic downsampling plus zero-mean *colour* Gaussian noise.

    Colour noise means independent per channel (not one grey noise field copied to R, G,
    B); the same model as ``denoise_sr``, kept as its own kind so studies name the setting
    of the ECO paper.
    """

    kind = "realworld_sr"

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        return self._add_noise(bicubic_downsample(hr, self.scale), generator)


@register_task
class HeteroscedasticDenoise(Task):
    """RCL's noise model: ``n ~ N(0, lambda_shot * y + lambda_read)`` with, per image,
    ``lambda_shot`` and ``lambda_read`` uniform in the configured ranges (scale 1)."""

    kind = "hetero_denoise"
    allowed_scales = (1,)

    @property
    def is_deterministic(self) -> bool:
        return self.config.shot_noise_range[1] == 0 and self.config.read_noise_range[1] == 0

    def sample_lambdas(self, batch: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """Per-image ``(lambda_shot, lambda_read)``, each of shape ``(batch,)`` (float64, CPU)."""
        u = torch.rand(batch, 2, generator=generator, dtype=torch.float64)
        (s_lo, s_hi), (r_lo, r_hi) = self.config.shot_noise_range, self.config.read_noise_range
        return s_lo + (s_hi - s_lo) * u[:, 0], r_lo + (r_hi - r_lo) * u[:, 1]

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        if self.is_deterministic:
            return hr.clone()
        batched = hr if hr.dim() == 4 else hr.unsqueeze(0)
        shot, read = self.sample_lambdas(batched.shape[0], generator)
        shot = shot.to(device=hr.device, dtype=hr.dtype).view(-1, 1, 1, 1)
        read = read.to(device=hr.device, dtype=hr.dtype).view(-1, 1, 1, 1)
        # The variance follows the clean signal y (clamped: a negative variance is meaningless).
        std = (shot * batched.clamp_min(0.0) + read).sqrt()
        noisy = batched + std * _standard_normal(batched, generator)
        return noisy if hr.dim() == 4 else noisy.squeeze(0)


@register_task
class HeteroscedasticDenoiseSR(HeteroscedasticDenoise):
    """RCL's JDenSR (joint denoising + SR, Tab. 2): MATLAB bicubic x``scale`` downsampling, then
    the heteroscedastic noise of ``hetero_denoise`` on the LR image (variance follows the LR)."""

    kind = "hetero_denoise_sr"
    allowed_scales = (2, 3, 4, 8)

    def _degrade(self, hr: Tensor, generator: torch.Generator) -> Tensor:
        return super()._degrade(bicubic_downsample(hr, self.scale), generator)


def build_task(cfg: TaskConfig) -> Task:
    """The :class:`Task` of ``cfg.kind`` (unknown kinds raise ``RegistryError``)."""
    return TASKS.get(cfg.kind)(cfg)

