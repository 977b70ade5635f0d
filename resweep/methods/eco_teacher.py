"""ECO's teacher ``F_pre``: where its weights come from and how it is built.

Sources: a resweep checkpoint, a plain weights file + registered model name, the output
folder of ``resweep train`` (its latest checkpoint), or a ``train`` stage's artifact (the
teacher trained from a config, made once per study by :mod:`resweep.stages`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from resweep.errors import ConfigError, ResweepError
from resweep.file_names import CHECKPOINT_FILE, CONFIG_FILE, WEIGHTS_FILE
from resweep.models.weights import load_checkpoint, load_model_weights


@dataclass
class ResolvedTeacher:
    """Weights and architecture of the teacher, with a content hash of the weights."""

    model_name: str
    model_kwargs: dict[str, Any]
    scale: int
    state: dict[str, Tensor]
    source: str  # where it came from, for messages and the manifest
    weights_sha256: str = ""
    trained_task: str | None = None  # the teacher's own task kind, when its config is known

    def __post_init__(self) -> None:
        if not self.weights_sha256:
            self.weights_sha256 = weights_fingerprint(self.state)

    def build(self, device: torch.device) -> nn.Module:
        from resweep.models import create_model

        model = create_model(self.model_name, scale=self.scale, **self.model_kwargs)
        try:
            model.load_state_dict(self.state)
        except RuntimeError as exc:
            raise ResweepError(
                f"eco teacher {self.source}: weights do not fit model '{self.model_name}' "
                f"{self.model_kwargs or ''}: {exc}"
            ) from None
        model.to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return model


def weights_fingerprint(state: dict[str, Tensor]) -> str:
    """sha256 of the weights' content (names, dtypes, shapes, bytes), not of any file path."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _weights_from_checkpoint(state: dict[str, Any], use_ema: bool) -> dict[str, Tensor]:
    ema = state.get("ema")
    if use_ema and isinstance(ema, dict) and ema:
        # ModelEma keeps the averaged network under 'module.'; those are the evaluated weights.
        return {k.removeprefix("module."): v for k, v in ema.items()}
    return {k.removeprefix("module."): v for k, v in state["model"].items()}


def teacher_from_checkpoint(path: Path, *, use_ema: bool, field: str) -> ResolvedTeacher:
    """A resweep checkpoint (folder or file); the architecture comes from its stored config."""
    try:
        state = load_checkpoint(path)
    except ResweepError as exc:
        raise ConfigError(str(exc), field=field) from None
    cfg = state.get("config")
    if not isinstance(cfg, dict) or "model" not in cfg or "task" not in cfg:
        raise ConfigError(
            f"checkpoint {path} stores no experiment config (model/task); use "
            "teacher.weights + teacher.model instead",
            field=field,
        )
    return ResolvedTeacher(
        model_name=str(cfg["model"]["name"]),
        model_kwargs=dict(cfg["model"].get("kwargs") or {}),
        scale=int(cfg["task"].get("scale", 1)),
        state=_weights_from_checkpoint(state, use_ema),
        source=f"checkpoint {path} (iteration {state.get('iteration')})",
        trained_task=cfg["task"].get("kind"),
    )


_CKPT_NUMBER = re.compile(r"(\d+)$")


def latest_checkpoint(run_dir: Path, *, field: str = "teacher.run_dir") -> Path:
    """The newest ``checkpoint.pt`` of a ``resweep train`` output folder (or a study trial's
    folder): the one ``result.json`` names, else the highest-numbered ``checkpoint_*`` folder.
    A folder holding several runs' checkpoints is ambiguous and refused."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"run folder not found: {run_dir}", field=field)
    result = run_dir / "result.json"
    if result.is_file():
        with contextlib.suppress(ValueError, OSError):
            named = json.loads(result.read_text()).get("checkpoint")
            if named and (Path(named) / CHECKPOINT_FILE).is_file():
                return Path(named) / CHECKPOINT_FILE
    found = [
        p
        for p in run_dir.rglob(CHECKPOINT_FILE)
        if not any(part.startswith(".") for part in p.relative_to(run_dir).parts)
    ]
    if not found:
        raise ConfigError(f"no {CHECKPOINT_FILE} under {run_dir}: has the run saved a checkpoint yet?", field=field)
    runs = sorted({p.parent.parent for p in found})
    if len(runs) > 1:
        shown = ", ".join(str(r) for r in runs[:4]) + (" ..." if len(runs) > 4 else "")
        raise ConfigError(
            f"{run_dir} holds the checkpoints of {len(runs)} runs ({shown}); "
            "point teacher.run_dir at one of them or teacher.checkpoint at one checkpoint",
            field=field,
        )

    def order(p: Path) -> tuple[int, float]:
        m = _CKPT_NUMBER.search(p.parent.name)
        return (int(m.group(1)) if m else -1, p.stat().st_mtime)

    return max(found, key=order)


def teacher_from_weights(
    path: Path, model: str, model_kwargs: dict[str, Any], scale: int, *, field: str
) -> ResolvedTeacher:
    try:
        state = load_model_weights(path)
    except ResweepError as exc:
        raise ConfigError(str(exc), field=field) from None
    return ResolvedTeacher(model, dict(model_kwargs), scale, state, source=f"weights {path} ({model})")




def teacher_from_artifact(folder: Path, *, field: str) -> ResolvedTeacher:
    """A ``train`` stage's artifact (``weights.pt`` + ``config.yaml``)."""
    from resweep.config import load_config

    config = load_config(Path(folder) / CONFIG_FILE)
    try:
        state = load_model_weights(Path(folder) / WEIGHTS_FILE)
    except ResweepError as exc:
        raise ConfigError(str(exc), field=field) from None
    return ResolvedTeacher(
        model_name=config.model.name,
        model_kwargs=dict(config.model.kwargs),
        scale=config.scale,
        state=state,
        source=f"trained teacher '{config.name}' (artifact {Path(folder).name})",
        trained_task=config.task.kind,
    )
