"""Studies: Ray Tune + Optuna sweeps of the training engine, resumable, with results on disk."""

from resweep.study.results import StudyResults
from resweep.study.runner import print_status, resume_study, run_study
from resweep.study.spec import StudyConfig, load_study, study_from_dict

__all__ = ["StudyConfig", "StudyResults", "load_study", "print_status", "resume_study", "run_study", "study_from_dict"]
