"""What a Trainer builds before training: device, stage artifacts, the model with its initial
weights, and the evaluator. Plain functions of the config, so the Trainer reads as a loop."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resweep.config import ExperimentConfig
from resweep.data import build_eval_set
from resweep.degradations.tasks import Task, build_task
from resweep.engine.checkpoint import WEIGHTS_FILE, load_model_weights
from resweep.engine.evaluate import Evaluator
from resweep.engine.finetune import apply_finetune_setup, load_initial_weights
from resweep.errors import ConfigError


def default_device(config: ExperimentConfig) -> torch.device:
    if config.train.device == "cuda" or (config.train.device == "auto" and torch.cuda.is_available()):
        return torch.device("cuda", torch.cuda.current_device() if torch.cuda.is_available() else 0)
    return torch.device("cpu")


def per_worker_batch(config: ExperimentConfig, world_size: int) -> int:
    """Each data-parallel worker's share of ``data.batch_size`` (which must divide evenly)."""
    if config.data.batch_size % world_size:
        raise ConfigError(
            f"batch size {config.data.batch_size} does not divide by {world_size} workers",
            field="data.batch_size",
        )
    return config.data.batch_size // world_size


def data_parallel(model: nn.Module, distributed: bool, device: torch.device) -> nn.Module:
    """The module the training step calls: DDP around ``model`` when a process group is up."""
    if not distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def default_cache_dir() -> Path:
    return Path(os.environ.get("RESWEEP_CACHE", Path.home() / ".cache" / "resweep"))


def resolve_artifacts(
    config: ExperimentConfig,
    artifacts: dict[str, Path] | None,
    cache_dir: Path,
    device: torch.device,
    log: Callable[[str], None],
) -> tuple[dict[str, Path], list[Any]]:
    """``(artifacts, records)``: the given artifacts, or, when a study driver gave none, the
    declared stages made (or reused) here in the study's artifact store layout
    (``<cache_dir>/artifacts/<key>``); records are those of the stages made here."""
    if artifacts is not None:
        return dict(artifacts), []
    from resweep.stages import prepare_local

    made, records = prepare_local(config, cache_dir, device=device, log=log)
    return dict(made), records


def set_up_model(
    model: nn.Module,
    config: ExperimentConfig,
    artifacts: dict[str, Path],
    device: torch.device,
    log: Callable[[str], None],
) -> nn.Module:
    """``model`` (fresh from ``create_model``) initialised from ``model.init_from`` (a file or a
    stage's artifact), set up for fine-tuning (``train.trainable``), moved to ``device`` and, on
    CUDA, to channels-last. The caller creates the model right after seeding, before any stage
    runs, so its fresh initialisation is the same on every rank and with or without stages."""
    new_parameters: list[str] = []
    init_path = config.model.init_from
    if isinstance(init_path, dict):
        init_path = artifacts["model.init_from"] / WEIGHTS_FILE
    if init_path is not None:
        new_parameters = load_initial_weights(
            model,
            load_model_weights(init_path),
            allow_new_head=config.model.init_new_head,
            source=str(init_path),
        )
    apply_finetune_setup(model, config.train.trainable, config.model.reinit_last_layer, log, new_parameters)
    model.to(device)
    if device.type == "cuda" and config.train.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def build_evaluator(config: ExperimentConfig, task: Task, device: torch.device) -> Evaluator | None:
    """The evaluator of ``eval.sets`` (None without sets)."""
    if not config.eval.sets:
        return None
    eval_task = task
    quantize = config.eval.quantize_input
    if quantize is not None and quantize != config.task.quantize_input:
        # e.g. train on exact LR (ECO needs x = D(y)), evaluate on 8-bit LR (benchmarks)
        eval_task = build_task(config.task.model_copy(update={"quantize_input": quantize}))
    eval_sets = [
        build_eval_set(spec, eval_task, seed=config.eval.seed, max_side=config.eval.max_side)
        for spec in config.eval.sets
    ]
    return Evaluator(
        eval_sets, eval_task, config.crop_border, device,
        averages=config.eval.averages,
        niqe_sets=[spec.niqe for spec in config.eval.sets],
    )
