"""Noise2Noise (Lehtinen et al., 2018) as RCL's baseline: learn to denoise from noisy pairs only.

The target is a second, independent noisy draw of the same clean image with the *same* noise
parameters (for heteroscedastic noise the same per-image ``(λ_shot, λ_read)``, as the RCL paper
does). The simulation needs the clean patch to make the two draws, so both draws are made here
from one generator (their parameters are then known to match) and the clean patch is dropped
before the engine sees the sample: the network and the loss only ever see noisy images.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from resweep.degradations.tasks import Denoise, HeteroscedasticDenoise, Task, quantize_8bit
from resweep.errors import ConfigError
from resweep.methods import Method, MethodConfig, MethodContext, register_method
from resweep.methods.noisy_only import WithoutCleanTarget
from resweep.methods.spn import derive_seed

TARGET_KEY = "noisy_target"


class Noise2NoiseConfig(MethodConfig):
    """Knobs of Noise2Noise (``methods.noise2noise.*``)."""

    loss: Literal["l2", "l1"] = Field(
        "l2", description="l2 (N2N's choice for zero-mean noise: the mean of the targets) or l1"
    )


def noise_std(task: Task, clean: Tensor, generator: torch.Generator) -> Tensor | float:
    """Per-pixel std of ``task``'s noise for ``clean`` (one image), drawing its parameters."""
    if isinstance(task, HeteroscedasticDenoise) and task.scale == 1:
        shot, read = task.sample_lambdas(1, generator)
        return (float(shot[0]) * clean.clamp_min(0.0) + float(read[0])).sqrt()
    if isinstance(task, Denoise):
        return task.sigma
    raise ConfigError(
        f"Noise2Noise needs a pure denoising task (hetero_denoise or denoise), got '{task.config.kind}'",
        field="task.kind",
    )


def two_noisy_draws(task: Task, clean: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Two independent noisy observations of ``clean`` with the same noise parameters."""
    std = noise_std(task, clean, generator)
    first = clean + std * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    second = clean + std * torch.randn(clean.shape, generator=generator, dtype=clean.dtype)
    if task.config.quantize_input:
        first, second = quantize_8bit(first), quantize_8bit(second)
    return first, second


@register_method
class Noise2Noise(Method):
    """Trains ``f(x₁) ≈ x₂`` for two noisy draws; replaces the supervised pixel loss."""

    name: ClassVar[str] = "noise2noise"
    config_class: ClassVar[type[MethodConfig]] = Noise2NoiseConfig
    replaces_pixel_loss: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__(config, context)
        assert isinstance(config, Noise2NoiseConfig)
        self.cfg = config
        self.task = context.task
        noise_std(self.task, torch.zeros(1), torch.Generator())  # refuses other tasks now, not mid-run

    def make_sample(self, sample: dict[str, Any], key: Any) -> dict[str, Any]:
        sample_seed = int(key[1]) if isinstance(key, (tuple, list)) else int(key)
        generator = torch.Generator().manual_seed(derive_seed(sample_seed, "noise2noise"))
        sample["lq"], sample[TARGET_KEY] = two_noisy_draws(self.task, sample["gt"], generator)
        return sample

    def wrap_train_dataset(self, dataset: Any) -> Any:
        return WithoutCleanTarget(dataset, self.make_sample)

    def loss_terms(
        self, prediction: Tensor, batch: dict[str, Tensor], iteration: int
    ) -> dict[str, Tensor]:
        target = batch[TARGET_KEY].float()
        loss = F.mse_loss if self.cfg.loss == "l2" else F.l1_loss
        return {"noise2noise": loss(prediction.float(), target)}
