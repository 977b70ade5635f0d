"""Optimisers and learning-rate schedules from the typed config."""

from __future__ import annotations

import math

import torch
from torch import nn

from resweep import name_tables
from resweep.config import OptimConfig, ScheduleConfig
from resweep.registry import Registry

#: name -> builder(params, cfg): the table in resweep.name_tables (OptimConfig.name checks
#: it there; a new optimiser is a builder here plus one line in BUILTIN_OPTIMIZERS)
OPTIMIZERS: Registry = name_tables.OPTIMIZERS


@OPTIMIZERS.register("adam")
def _adam(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("adamw")
def _adamw(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)


@OPTIMIZERS.register("lamb")
def _lamb(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    # timm's Lamb: the large-batch optimiser of the ECO paper's setting. timm applies the
    # trust ratio only when weight_decay != 0 unless always_adapt, and clips the global grad
    # norm at 1.0 by default: without both overrides wd=0 would train Adam plus a hidden
    # clip. Clipping is the engine's job (optim.grad_clip / optim.grad_value_clip).
    from timm.optim import Lamb

    return Lamb(
        params,
        lr=cfg.lr,
        betas=cfg.betas,
        eps=cfg.eps,
        weight_decay=cfg.weight_decay,
        always_adapt=True,
        max_grad_norm=None,
    )


@OPTIMIZERS.register("sgd")
def _sgd(params: list[nn.Parameter], cfg: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    cfg = cfg.model_copy(update={"lr": cfg.lr * cfg.lr_scale})
    return OPTIMIZERS.get(cfg.name)(params, cfg)


def lr_factor(cfg: ScheduleConfig, iteration: int, total: int, base_lr: float) -> float:
    """Multiplier of the base learning rate at ``iteration`` (0-based step index)."""
    if cfg.warmup_iterations and iteration < cfg.warmup_iterations:
        return (iteration + 1) / cfg.warmup_iterations
    if cfg.kind == "constant":
        return 1.0
    if cfg.kind == "step":
        return cfg.gamma ** sum(1 for m in cfg.milestones if iteration >= m)
    # cosine from the end of warm-up to the last iteration, down to min_lr
    span = max(1, total - cfg.warmup_iterations)
    progress = min(1.0, (iteration - cfg.warmup_iterations) / span)
    floor = min(cfg.min_lr / base_lr, 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    base_lr = optimizer.param_groups[0]["lr"]
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda it: lr_factor(cfg, it, total, base_lr)
    )
