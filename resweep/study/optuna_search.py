"""Ray Tune's Optuna searcher, told the truth about collapsed trials and interrupted asks."""

from __future__ import annotations

import logging
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from resweep.status import Status

logger = logging.getLogger("resweep.study")

# user attribute of an Optuna trial drawn before a stop and not continued (see ``_fail_interrupted_asks``)
INTERRUPTED_ATTR = "resweep_interrupted"
INTERRUPTED_NOTE = (
    "not continued: the driver stopped after Optuna drew this configuration and before Tune saved "
    "its searcher; the resumed study drew again from the saved sampler"
)


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

    # ------------------------------------------------------------------ resume
    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._fail_interrupted_asks()

    def _fail_interrupted_asks(self) -> list[int]:
        """Reconcile a persistent storage with the restored searcher; returns the trial numbers failed.

        Optuna writes each ``ask`` to its storage at once, while Tune saves this searcher only
        every few seconds. A driver killed in between leaves a RUNNING Optuna trial that the
        restored searcher does not know: no Ray trial ever ran it and nothing would ever tell
        it. It is told FAIL, marked ``INTERRUPTED_ATTR``. FAIL, not reused: the restored sampler
        (its random state included) is the one from before that ask, so its next draw is the
        ask again (the same configuration when the sampler is seeded, as resweep's always is,
        and no result came in between); reusing the orphan as well would run that configuration
        twice. TPE and NSGA-II learn from COMPLETE and PRUNED trials only, so the FAIL does not
        steer them. (resweep's ``grid`` is Tune's variant generator, not Optuna: no orphan there.)

        The driver owns its Optuna study: another process asking in the same study at the same
        time would see its running trials failed here.
        """
        from optuna.trial import TrialState

        known = {ot_trial.number for ot_trial in self._ot_trials.values()}
        interrupted = [
            t for t in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number not in known
        ]
        for frozen in interrupted:
            # through the storage, by trial id: the orphan has no live Trial object here
            # (Optuna's own fail_stale_trials also works on the storage this way)
            self._ot_study._storage.set_trial_user_attr(frozen._trial_id, INTERRUPTED_ATTR, INTERRUPTED_NOTE)
            self._ot_study.tell(frozen.number, state=TrialState.FAIL)
            logger.warning("Optuna trial #%d %s: told FAIL", frozen.number, INTERRUPTED_NOTE)
        return [t.number for t in interrupted]
