"""The training loop shared by the MAE pretraining stages (images: ``mae_pretrain``, clips:
``mae_video_pretrain``): AdamW (no weight decay on biases and norms, betas 0.9/0.95 as MAE),
linear warm-up then cosine decay, a refusal of a non-finite loss, progress lines every 10%.

Ray-free; torch is imported inside the function so that reading stage definitions stays cheap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn


def train_masked_autoencoder(
    model: nn.Module,
    next_batch: Callable[[torch.Generator], torch.Tensor],
    *,
    steps: int,
    lr: float,
    weight_decay: float,
    warmup_fraction: float,
    mask_ratio: float,
    seed: int,
    device: torch.device,
    log: Callable[[str], None],
    stage: str,
) -> float:
    """Train ``model`` (``model(batch, mask_ratio=, generator=) -> (loss, pred, mask)``) for
    ``steps`` on ``next_batch(data generator)``; returns the mean loss of the last 10% of steps.

    The data generator is seeded ``seed + 1``, the masks' ``seed + 2``; ``stage`` names the
    stage in log lines and errors.
    """
    import torch

    decay = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() <= 1]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(0.9, 0.95),
    )
    warmup = int(steps * warmup_fraction)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    data_gen = torch.Generator().manual_seed(seed + 1)
    mask_gen = torch.Generator().manual_seed(seed + 2)
    tail = max(1, steps // 10)
    tail_losses: list[float] = []
    report_every = max(1, steps // 10)
    started = time.perf_counter()
    model.train()
    for step in range(steps):
        batch = next_batch(data_gen).to(device)
        loss, _, _ = model(batch, mask_ratio=mask_ratio, generator=mask_gen)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{stage}: the loss became {float(loss)} at step {step + 1}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if step >= steps - tail:
            tail_losses.append(loss.item())
        if (step + 1) % report_every == 0 or step + 1 == steps:
            log(
                f"{stage}: step {step + 1}/{steps} masked loss {loss.item():.4f} "
                f"({time.perf_counter() - started:.0f} s)"
            )
    return sum(tail_losses) / len(tail_losses)
