"""Noise2Self (Batson & Royer, 2019) as RCL's baseline: J-invariant masked denoising.

Each step masks one phase of a 3x3 grid (every pixel whose row and column fall at the chosen
offsets modulo 3), replaces each masked pixel by the mean of its 8 neighbours (the "donut"
interpolation; reflect padding at the border, which never reflects a pixel onto itself) and
computes the loss on the masked pixels only, against their noisy values. Neighbours of a masked
pixel are never masked (the grid spacing is 3), so the network input — hence the prediction at
the masked pixels — does not depend on those pixels' own values: the loss is J-invariant.
Evaluation uses the plain network on the unmasked image (the paper's cheaper variant).
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from resweep.errors import ConfigError
from resweep.methods import Method, MethodConfig, MethodContext, register_method
from resweep.methods.noisy_only import WithoutCleanTarget
from resweep.methods.spn import derive_seed

NOISY_KEY = "n2s_noisy"
MASK_KEY = "n2s_mask"


class Noise2SelfConfig(MethodConfig):
    """Knobs of Noise2Self (``methods.noise2self.*``)."""

    grid: int = Field(3, ge=2, description="mask one pixel per grid x grid cell (paper: 3)")
    loss: Literal["l2", "l1"] = Field("l2", description="loss on the masked pixels (paper: l2)")


def grid_mask(shape: tuple[int, ...], grid: int, phase: int, device: torch.device | None = None) -> Tensor:
    """``(1, 1, H, W)`` float mask: 1 where ``row % grid, col % grid == divmod(phase, grid)``."""
    h, w = shape[-2], shape[-1]
    row, col = divmod(phase, grid)
    rows = (torch.arange(h, device=device) % grid == row).view(-1, 1)
    cols = (torch.arange(w, device=device) % grid == col).view(1, -1)
    return (rows & cols).float().view(1, 1, h, w)


def donut_mean(image: Tensor) -> Tensor:
    """Mean of each pixel's 8 neighbours (the centre excluded), reflect padding at the border."""
    channels = image.shape[1]
    kernel = torch.ones(3, 3, dtype=image.dtype, device=image.device)
    kernel[1, 1] = 0.0
    kernel = (kernel / 8.0).expand(channels, 1, 3, 3)
    return F.conv2d(F.pad(image, (1, 1, 1, 1), mode="reflect"), kernel, groups=channels)


def masked_input(noisy: Tensor, mask: Tensor) -> Tensor:
    """The network input: masked pixels replaced by their donut mean."""
    return noisy * (1.0 - mask) + donut_mean(noisy) * mask


@register_method
class Noise2Self(Method):
    """J-invariant masked training; replaces the supervised pixel loss."""

    name: ClassVar[str] = "noise2self"
    config_class: ClassVar[type[MethodConfig]] = Noise2SelfConfig
    replaces_pixel_loss: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__(config, context)
        assert isinstance(config, Noise2SelfConfig)
        self.cfg = config
        if context.config.scale != 1:
            raise ConfigError(
                f"Noise2Self trains a denoiser (output at input size): task.scale must be 1, "
                f"got {context.config.scale}",
                field="task.scale",
            )
        self._seed = context.config.train.seed
        self._rank = context.world.rank

    def wrap_train_dataset(self, dataset: Any) -> Any:
        return WithoutCleanTarget(dataset)

    def phase(self, iteration: int) -> int:
        """The masked grid phase of a step: random, reproducible from (seed, iteration, rank)."""
        g = torch.Generator().manual_seed(derive_seed(self._seed, "noise2self", iteration, self._rank))
        return int(torch.randint(0, self.cfg.grid**2, (1,), generator=g))

    def transform_batch(self, batch: dict[str, Tensor], iteration: int) -> dict[str, Tensor]:
        noisy = batch["lq"]
        mask = grid_mask(noisy.shape, self.cfg.grid, self.phase(iteration), noisy.device).to(noisy.dtype)
        return {**batch, "lq": masked_input(noisy, mask), NOISY_KEY: noisy, MASK_KEY: mask}

    def loss_terms(
        self, prediction: Tensor, batch: dict[str, Tensor], iteration: int
    ) -> dict[str, Tensor]:
        mask = batch[MASK_KEY].float()
        diff = prediction.float() - batch[NOISY_KEY].float()
        per_pixel = diff.square() if self.cfg.loss == "l2" else diff.abs()
        masked_count = mask.sum() * prediction.shape[0] * prediction.shape[1]
        return {"noise2self": (per_pixel * mask).sum() / masked_count}
