"""Reading model weights: a resweep checkpoint (the engine writes it, :mod:`resweep.engine.checkpoint`)
or a plain state-dict file, loaded with ``weights_only=True``. Here, below the methods, because
methods read weights too (a teacher, the negatives' network)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from resweep.errors import ResweepError
from resweep.file_names import CHECKPOINT_FILE

__all__ = ["FORMAT", "load_checkpoint", "load_model_weights"]

FORMAT = "resweep-checkpoint-v1"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a resweep checkpoint (a directory holding checkpoint.pt, or the file itself)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise ResweepError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or unsafe files
        raise ResweepError(f"cannot load checkpoint {path}: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ResweepError(f"{path} is not a resweep checkpoint (no '{FORMAT}' marker)")
    return state


def load_model_weights(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Model weights from a resweep checkpoint (its EMA weights if it has them? no: the trained
    weights) or from a plain state-dict file (``.pt``/``.pth``, optionally under 'state_dict',
    'params' or 'model' as BasicSR and timm save them). DDP's ``module.`` prefix is removed."""
    path = Path(path)
    if path.is_dir() or _is_resweep_checkpoint(path):
        state = load_checkpoint(path, map_location)["model"]
    else:
        if not path.is_file():
            raise ResweepError(f"weights file not found: {path}")
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as exc:
            raise ResweepError(f"cannot load weights {path}: {exc}") from exc
        for key in ("state_dict", "params_ema", "params", "model"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ResweepError(f"{path} holds no model state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _is_resweep_checkpoint(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(state, dict) and state.get("format") == FORMAT
