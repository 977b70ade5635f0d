"""Supervised pixel losses. Methods with their own networks and state live in resweep.methods."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from resweep import name_tables
from resweep.registry import Registry

PixelLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
#: the table in resweep.name_tables (LossConfig.pixel checks it there; a new loss is a
#: function here plus one line in BUILTIN_PIXEL_LOSSES)
PIXEL_LOSSES: Registry[PixelLoss] = name_tables.PIXEL_LOSSES


@PIXEL_LOSSES.register("l1")
def l1_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(prediction, target)


@PIXEL_LOSSES.register("l2")
def l2_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(prediction, target)


@PIXEL_LOSSES.register("charbonnier")
def charbonnier_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((prediction - target) ** 2 + eps**2).mean()


def get_pixel_loss(name: str) -> PixelLoss:
    return PIXEL_LOSSES.get(name)
