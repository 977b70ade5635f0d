"""Ray Tune's Optuna searcher, told the truth about collapsed trials."""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from resweep.status import Status


class DivergenceAwareOptunaSearch(OptunaSearch):
    """A diverged trial is a FAILED Optuna trial, never a score (its last PSNR would mislead TPE)."""

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        if result and (result.get("status") == Status.DIVERGED or result.get("diverged")):
            return super().on_trial_complete(trial_id, None, error=True)
        return super().on_trial_complete(trial_id, result, error)

    def annotate(self, trial_id: str, attrs: dict[str, Any]) -> None:
        """Store user attributes on a running Optuna trial (shown by optuna-dashboard): which
        Ray trials, seeds and per-seed outcomes an Optuna trial stands for."""
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None:
            return
        for key, value in attrs.items():
            ot_trial.set_user_attr(key, value)
