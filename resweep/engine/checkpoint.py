"""Checkpoint files: everything needed to continue a run, loaded with ``weights_only=True``
(the loaders live in :mod:`resweep.models.weights`, where the methods read weights too)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from resweep.file_names import CHECKPOINT_FILE, WEIGHTS_FILE
from resweep.models.weights import FORMAT, load_checkpoint, load_model_weights

__all__ = [
    "CHECKPOINT_FILE",
    "FORMAT",
    "WEIGHTS_FILE",
    "load_checkpoint",
    "load_model_weights",
    "save_checkpoint",
]


def save_checkpoint(state: dict[str, Any], directory: str | Path) -> Path:
    """Write ``state`` to ``directory/checkpoint.pt`` atomically (a partial file never replaces a good one)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CHECKPOINT_FILE
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save({"format": FORMAT, **state}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
