"""Studies: Ray Tune + Optuna sweeps of the training engine, resumable, with results on disk.

Layers of this package (each module one job):

- ``spec``: the study file (typed, validated) and the trials it resolves into;
- ``trial_spec``: :class:`TrialSpec` (what one trial runs, resolved once on the driver) and
  :class:`TrialSettings` (resources and places every trial shares);
- ``layout``: the study folder's file names; ``results``: writing/reading them;
- ``seed_groups``: Optuna over seed groups (mean over seeds, FAIL on divergence);
- ``tuner``: the Tuner assembly shared by run and resume; ``schedulers``;
- ``callback``: the driver side of a running study (records, progress, trial logs);
- ``tracking``: copies of every trial in MLflow (``tracking_mlflow``) and TensorBoard;
- ``progress``: live progress display; ``status_view``: ``resweep status`` / ``logs``;
- ``runner``: ``run_study`` / ``resume_study``; ``extend``: ``extend_study`` (more seeds or
  samples, in new Tune experiments of the same folder); ``warm_start``: earlier studies'
  results told to Optuna or reused.

Attributes are imported lazily, so ``resweep status`` (which needs only ``status_view``)
imports neither Ray nor torch.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "StudyConfig": "resweep.study.spec",
    "load_study": "resweep.study.spec",
    "study_from_dict": "resweep.study.spec",
    "StudyResults": "resweep.study.results",
    "print_status": "resweep.study.status_view",
    "resume_study": "resweep.study.runner",
    "run_study": "resweep.study.runner",
    "extend_study": "resweep.study.extend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'resweep.study' has no attribute {name!r}")
