"""What a training run reports: the Reporter it reports to, the outcome it returns, its
status strings and the progress line it logs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from resweep.status import Status

# plain strings in reports; their one definition is resweep.status.Status
STATUS_RUNNING = Status.RUNNING.value
STATUS_FINISHED = Status.FINISHED.value
STATUS_DIVERGED = Status.DIVERGED.value


class Reporter(Protocol):
    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        """Called by every rank at the same iterations; ``checkpoint`` only on rank 0."""


class NullReporter:
    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        pass


@dataclass
class RunOutcome:
    status: str
    iteration: int
    metrics: dict[str, Any] = field(default_factory=dict)


def progress_line(metrics: dict[str, Any], iterations: int) -> str:
    """One log line for a report: iteration, loss, lr, speed and the evaluation PSNRs."""
    parts = [f"it {metrics['iteration']}/{iterations}"]
    if "loss.total" in metrics:
        parts.append(f"loss {metrics['loss.total']:.4g}")
    parts.append(f"lr {metrics['lr']:.2e}")
    parts.append(f"{metrics['time_per_step'] * 1000:.0f} ms/step")
    for key, value in metrics.items():
        if key.startswith("eval.") and key.endswith((".psnr_y", ".psnr")) and isinstance(value, float):
            base = metrics.get(f"{key}_baseline")
            parts.append(f"{key[5:]} {value:.2f}" + (f" (baseline {base:.2f})" if base else ""))
    return " | ".join(parts)
