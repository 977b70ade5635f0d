"""The extension point for training methods (SPN, ECO, ...).

A method is one file: a ``MethodConfig`` subclass with its knobs and a ``Method`` subclass
registered in ``resweep.methods.METHODS``. The training engine calls its hooks; nothing
outside the method's file knows what it does. Methods are ``nn.Module`` so that the networks
and buffers they keep (EMA negatives, feature networks) move to the device and land in
checkpoints with ``state_dict``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from resweep.errors import ResweepError
from resweep.methods.diagnostics import Diagnostic, Phase
from resweep.methods.method_config import MethodConfig

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.degradations.tasks import Task


@dataclass
class World:
    """Where this process sits in data-parallel training (rank 0 of 1 without DDP)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


@dataclass
class MethodContext:
    """What a method may use when it is built."""

    config: ExperimentConfig
    model: nn.Module  # the unwrapped network being trained
    task: Task
    world: World
    cache_dir: Path  # scratch for a run's own derived files (not shared artifacts: see stages)
    log: Callable[[str], None] = print
    #: role -> local folder holding that artifact's files (made by resweep.stages before the run)
    artifacts: dict[str, Path] = field(default_factory=dict)

    def artifact_dir(self, role: str) -> Path:
        """The local folder of the artifact this run declared under ``role``."""
        if role not in self.artifacts:
            known = ", ".join(sorted(self.artifacts)) or "none"
            raise ResweepError(
                f"no artifact for role '{role}' in this run (artifacts: {known}); the stages a "
                "config declares are made by resweep.stages.prepare_local / prepare_stages before "
                "training starts"
            )
        return Path(self.artifacts[role])


class Method(nn.Module):
    """Base class: every hook is a no-op, so a method overrides only what it changes."""

    name: ClassVar[str]
    config_class: ClassVar[type[MethodConfig]]
    #: True for self-supervised methods whose loss replaces the supervised pixel loss.
    replaces_pixel_loss: ClassVar[bool] = False

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__()
        self.config = config

    @property
    def needs_fp32_forward(self) -> bool:
        """True when the model's forward must run in fp32 even under ``train.amp`` (the engine
        then leaves autocast off for the whole step): for a loss that compares ŷ with
        something within a bf16 rounding step of it, as SPN's late hard negatives are."""
        return False

    def wrap_train_dataset(self, dataset: Any) -> Any:
        """Return the training dataset to use (e.g. one that also yields precomputed targets)."""
        return dataset

    def transform_batch(self, batch: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        """Change the batch before the forward pass (e.g. mix inputs and targets)."""
        return batch

    def loss_terms(
        self, prediction: torch.Tensor, batch: dict[str, torch.Tensor], iteration: int
    ) -> dict[str, torch.Tensor]:
        """Extra loss terms, already weighted and signed; the engine adds them to the total.

        The engine calls this with the fp32 prediction and autocast off, so loss networks and
        distances run in fp32, unless the method's config sets ``loss_precision: bf16`` (then
        under the run's bf16 autocast when ``train.amp`` is on): see :mod:`resweep.engine.amp`."""
        return {}

    @torch.no_grad()
    def after_step(self, model: nn.Module, iteration: int) -> None:
        """Called after the optimiser step of ``iteration`` (1-based count of steps done)."""

    def metrics(self, iteration: int) -> dict[str, float]:
        """Scalars to report with training metrics (e.g. a schedule value)."""
        return {}

    def notes(self) -> list[str]:
        """Caveats to record in results (e.g. 'random features, not the paper's setting')."""
        return []

    def diagnostics(self, model: nn.Module, dataset: Any, phase: Phase) -> list[Diagnostic]:
        """Samples describing ``model`` at ``phase`` (``start``: before the first step, ``end``:
        after the last), on ``dataset`` (the training data as this method wrapped it). The
        ``train`` stage writes them into its artifact; see :mod:`resweep.methods.diagnostics`."""
        return []
