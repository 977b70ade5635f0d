"""Ray Tune's Optuna searcher, told the truth about collapsed trials and interrupted asks."""

from __future__ import annotations

import io
import logging
import pickle
import threading
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


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _LockFreePickler(pickle.Pickler):
    """Pickles a thread lock as "a new, unlocked lock of the same kind".

    Optuna's samplers may hold locks (optuna 5.1's ``NSGAIISampler`` keeps a ``threading.Lock``
    and cannot be pickled), while Tune pickles the searcher when the Tuner is built and at every
    searcher checkpoint. A lock guards threads of one process; a restored searcher starts with
    none holding it, so a fresh lock is its exact equivalent. Everything else (the sampler's
    random state included, which the interrupted-ask rule below relies on) is kept as is, for
    any sampler and any Optuna release, without knowing where a release keeps its locks.
    """

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, _LOCK_TYPES[0]):
            return threading.Lock, ()
        if isinstance(obj, _LOCK_TYPES[1]):
            return threading.RLock, ()
        return NotImplemented


def lock_free_dumps(obj: Any) -> bytes:
    """``pickle.dumps`` that replaces thread locks by fresh ones (see :class:`_LockFreePickler`)."""
    buffer = io.BytesIO()
    _LockFreePickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buffer.getvalue()


class DivergenceAwareOptunaSearch(OptunaSearch):
    """A diverged trial is a FAILED Optuna trial, never a score (its last PSNR would mislead TPE).

    Its state pickles whatever locks the sampler holds (see :class:`_LockFreePickler`).
    """

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        return {"lock_free_state": lock_free_dumps(self.__dict__)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(pickle.loads(state["lock_free_state"]))

    def save(self, checkpoint_path: str) -> None:
        # the layout of OptunaSearch.save (a pickled __dict__), so OptunaSearch.restore and
        # older checkpoints read the same way
        with open(checkpoint_path, "wb") as file:
            file.write(lock_free_dumps(self.__dict__.copy()))

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
