"""Exponential moving average of weights, used for evaluation when ``train.ema_decay`` is set."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    """``ema = decay * ema + (1 - decay) * weights``; buffers are copied as they are."""

    def __init__(self, model: nn.Module, decay: float):
        super().__init__()
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for ema_p, p in zip(self.module.parameters(), model.parameters(), strict=True):
            ema_p.lerp_(p.detach(), 1.0 - self.decay)
        for ema_b, b in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_b.copy_(b)
