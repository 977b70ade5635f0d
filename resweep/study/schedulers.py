"""Tune's schedulers for reports that do not all carry the objective.

A trial reports its training loss every ``train.log_every`` iterations and evaluates every
``eval.every``; only evaluations carry the objective. Tune's strict metric check would stop
the study at the first loss-only report, so these schedulers do not advertise their metric
(``metric`` is ``None`` to Tune) and act only on reports that carry it.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler, TrialScheduler


class ObjectiveOptionalASHA(ASHAScheduler):
    """ASHA already skips reports without its metric; only Tune's check needs quieting."""

    @property
    def metric(self) -> str | None:
        return None


class ObjectiveOptionalHyperBand(HyperBandScheduler):
    @property
    def metric(self) -> str | None:
        return None

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        if self._metric not in result:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        if self._metric not in result:
            return self.on_trial_remove(tune_controller, trial)
        return super().on_trial_complete(tune_controller, trial, result)
