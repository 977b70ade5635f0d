"""Ray Tune's Optuna searcher, told the truth about collapsed trials."""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch


class DivergenceAwareOptunaSearch(OptunaSearch):
    """A diverged trial is a FAILED Optuna trial, never a score (its last PSNR would mislead TPE)."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result and (result.get("status") == "diverged" or result.get("diverged")):
            return super().on_trial_complete(trial_id, None, error=True)
        return super().on_trial_complete(trial_id, result, error)
