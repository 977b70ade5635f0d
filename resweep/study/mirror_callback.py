"""The Ray Tune callback that keeps a study's remote mirror up to date (:mod:`.mirror`).

Listed after the study's own callback, so it sees each event after the study's files were
flushed. Picklable (Tune saves the run config): only its settings travel; a resumed driver
replaces it by a new one bound to its own study folder (see ``runner.resume_study``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ray.tune import Callback

from resweep.study.mirror import MIRROR_INTERVAL_S, StudyMirror


class MirrorCallback(Callback):
    def __init__(self, study_dir: str | Path, storage: str, interval_s: float = MIRROR_INTERVAL_S):
        self.study_dir = str(study_dir)
        self.storage = storage
        self.interval_s = interval_s
        self.mirror: StudyMirror | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {"study_dir": self.study_dir, "storage": self.storage, "interval_s": self.interval_s,
                "mirror": None}

    def _get(self) -> StudyMirror:
        if self.mirror is None:
            self.mirror = StudyMirror(self.study_dir, self.storage, self.interval_s)
        return self.mirror

    def setup(self, **info: Any) -> None:
        self._get().request()  # the study's files so far, at once

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._get().trial_active(trial.trial_id)
        self._get().request()

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._get().trial_ended(trial.trial_id)
        self._get().request()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._get().trial_ended(trial.trial_id)
        self._get().request()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._get().request()  # throttled: a sync every interval_s at most

    def close(self) -> None:
        """The last sync, after the study's callback wrote its final files."""
        self._get().close()
