"""The training loop shared by the MAE pretraining stages (images: ``mae_pretrain``, clips:
``mae_video_pretrain``): AdamW (no weight decay on biases and norms, betas 0.9/0.95 as MAE),
linear warm-up then cosine decay, a refusal of a non-finite loss, progress lines every 10%;
and the pieces of MAE's recipe the stages share: the linear scaling rule of the learning rate
(``lr = base_lr x batch / 256``) and RandomResizedCrop.

The recipes (the stages' defaults):

* image MAE (He et al. 2022, which the MAE-loss paper says it follows): base lr 1.5e-4, AdamW
  (0.9, 0.95), weight decay 0.05, RandomResizedCrop(scale 0.2-1, bicubic) + horizontal flip;
* video MAE (MAE-ST, Feichtenhofer et al. 2022, the network of the paper's video rows): base lr
  1.6e-3, the same optimiser, RandomResizedCrop(scale 0.5-1) on every frame alike + horizontal
  flip (MAE-ST's ``jitter_scales_relative`` / ``jitter_aspect_relative`` defaults).

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

MAE_BASE_LR = 1.5e-4  # He et al. 2022: lr = base_lr x batch / 256
MAE_ST_BASE_LR = 1.6e-3  # Feichtenhofer et al. 2022 (MAE-ST), the same rule
CROP_RATIO = (3 / 4, 4 / 3)  # RandomResizedCrop's aspect ratios (torchvision's and MAE-ST's)


def scaled_lr(base_lr: float, batch_size: int) -> float:
    """MAE's linear scaling rule: ``base_lr x batch_size / 256``."""
    return base_lr * batch_size / 256


def random_resized_crop_box(
    height: int, width: int, scale: tuple[float, float], generator: torch.Generator,
    ratio: tuple[float, float] = CROP_RATIO,
) -> tuple[int, int, int, int]:
    """``(top, left, h, w)`` of a RandomResizedCrop: torchvision's ``get_params`` draw for draw
    (10 tries of an area fraction in ``scale`` and a log-uniform aspect ratio, else the centre
    crop), from ``generator`` instead of the global RNG."""
    import torch

    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def resize_square(images: torch.Tensor, side: int) -> torch.Tensor:
    """``(..., C, h, w)`` floats in [0, 1] resized to ``side x side``: bicubic with antialiasing
    (MAE's RandomResizedCrop interpolation), clamped back to [0, 1]."""
    import torch.nn.functional as F

    if images.shape[-2:] == (side, side):
        return images
    lead = images.shape[:-3]
    flat = images.reshape(-1, *images.shape[-3:])
    out = F.interpolate(flat, size=(side, side), mode="bicubic", align_corners=False, antialias=True)
    return out.clamp_(0, 1).reshape(*lead, *out.shape[-3:])


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
