"""The study folder: the one place that names its files, and how its Parquet parts are read.

Light on purpose (pyarrow only; no torch, no Ray): ``resweep status`` and the analysis read
a study folder, possibly copied off a cluster onto a laptop without torch.
Schema: docs/results-schema.md.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

STUDY_FILE = "study.yaml"  # the validated study file, for resume
META_FILE = "study.json"  # what the analysis needs to know about the study
TRIALS_FILE = "trials.parquet"  # one row per trial (a single file: small)
CURVES_FILE = "curves.parquet"  # a folder of per-trial parts: every report of every trial
PER_IMAGE_FILE = "per_image.parquet"  # a folder of per-trial parts: per-image metrics
PARQUET_FILES = (TRIALS_FILE, CURVES_FILE, PER_IMAGE_FILE)
TUNE_DIR = "tune"  # Ray Tune's experiment (resume state); not read by the analysis
TRAIN_RUNS_DIR = "train_runs"  # Ray Train runs of multi-worker trials
TRIAL_DIRS = "trials"  # trials/<trial_id>/log.txt, error.json
TRIAL_LOG = "log.txt"
TRIAL_ERROR = "error.json"
CACHE_DIR = "cache"
IMAGES_DIR = "images"
OPTUNA_DB = "optuna.db"
REPORT_DIR = "report"
ARTIFACTS_FILE = "artifacts.parquet"  # one row per stage artifact the study made or reused
DRIVER_LOCK = "driver.lock"  # held by the driver running the study (study/driver_lock.py)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def safe_name(text: str) -> str:
    """A trial id as a file name (Ray's ids are already safe; this guards other callers)."""
    return _UNSAFE.sub("_", str(text)) or "_"


@dataclass(frozen=True)
class StudyLayout:
    """Paths of one study folder."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def study_file(self) -> Path:
        return self.root / STUDY_FILE

    @property
    def meta(self) -> Path:
        return self.root / META_FILE

    @property
    def trials(self) -> Path:
        return self.root / TRIALS_FILE

    @property
    def curves(self) -> Path:
        return self.root / CURVES_FILE

    @property
    def per_image(self) -> Path:
        return self.root / PER_IMAGE_FILE

    @property
    def tune(self) -> Path:
        return self.root / TUNE_DIR

    @property
    def cache(self) -> Path:
        return self.root / CACHE_DIR

    @property
    def images(self) -> Path:
        return self.root / IMAGES_DIR

    @property
    def optuna_db(self) -> Path:
        return self.root / OPTUNA_DB

    @property
    def trial_dirs(self) -> Path:
        return self.root / TRIAL_DIRS

    def trial_dir(self, trial_id: str) -> Path:
        return self.trial_dirs / safe_name(trial_id)

    def trial_log(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL_LOG

    def trial_error(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL_ERROR

    def part(self, dataset: str, trial_id: str) -> Path:
        """The part of ``curves.parquet`` / ``per_image.parquet`` that holds one trial's rows."""
        return self.root / dataset / f"{safe_name(trial_id)}.parquet"


def parquet_exists(path: str | Path) -> bool:
    """A Parquet file, or a folder of parts holding at least one part."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and any(path.glob("*.parquet")))


def read_parquet(path: str | Path) -> pa.Table:
    """Read a Parquet file or a folder of parts as one table.

    Parts of different trials may have different columns (a method's metrics, a conditional
    knob) and different types for one column (int in one, float in another): schemas are
    unified (missing columns are null; numbers promoted), which ``pq.read_table(folder)``
    does not do (it takes the first part's schema).
    """
    path = Path(path)
    if path.is_file():
        return pq.read_table(path)
    parts = sorted(p for p in path.glob("*.parquet") if p.is_file())
    tables = [pq.read_table(p) for p in parts]
    tables = [t for t in tables if t.num_columns]
    if not tables:
        return pa.table({})
    return pa.concat_tables(tables, promote_options="permissive")
