"""The study folder: the one place that names its files, and how its Parquet parts are read.

Light on purpose (pyarrow only; no torch, no Ray): ``resweep status`` and the analysis read
a study folder, possibly copied off a cluster onto a laptop without torch.
Schema: docs/results-schema.md.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

STUDY_FILE = "study.yaml"  # the validated study file, for resume
META_FILE = "study.json"  # what the analysis needs to know about the study
# each a folder of parts (see read_parquet); studies written before parts existed hold one file
TRIALS_FILE = "trials.parquet"  # one row per trial
CURVES_FILE = "curves.parquet"  # every report of every trial
PER_IMAGE_FILE = "per_image.parquet"  # per-image metrics of every evaluation
PARQUET_FILES = (TRIALS_FILE, CURVES_FILE, PER_IMAGE_FILE)
TUNE_DIR = "tune"  # Ray Tune's experiment (resume state); not read by the analysis
TUNE_EXTENSION_PREFIX = TUNE_DIR + "-ext"  # tune-ext1, tune-ext2: the experiments of `resweep extend`
TRAIN_RUNS_DIR = "train_runs"  # Ray Train runs of multi-worker trials
TRIAL_DIRS = "trials"  # trials/<trial_id>/log.txt, error.json
TRIAL_LOG = "log.txt"
TRIAL_ERROR = "error.json"
CACHE_DIR = "cache"
IMAGES_DIR = "images"
OPTUNA_DB = "optuna.db"
REPORT_DIR = "report"
ARTIFACTS_FILE = "artifacts.parquet"  # one row per stage artifact the study made or reused
STAGE_KEYS_FILE = "stage_keys.json"  # artifact keys computed once by the driver (stages/study_keys.py)
TENSORBOARD_DIR = "tensorboard"  # tensorboard/<trial_id>/ event files (tracking.tensorboard)
DRIVER_LOCK = "driver.lock"  # held by the driver running the study (study/driver_lock.py)

# a part holding the rows of many (ended) trials; "~" never occurs in a trial part's name
CHUNK_PREFIX = "chunk~"
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

    @property
    def tensorboard(self) -> Path:
        return self.root / TENSORBOARD_DIR

    def trial_dir(self, trial_id: str) -> Path:
        return self.trial_dirs / safe_name(trial_id)

    def trial_log(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL_LOG

    def trial_error(self, trial_id: str) -> Path:
        return self.trial_dir(trial_id) / TRIAL_ERROR

    def part(self, dataset: str, trial_id: str) -> Path:
        """The part of ``trials.parquet`` / ``curves.parquet`` / ``per_image.parquet`` that
        holds one trial's rows while it runs (and until a compaction moves them to a chunk)."""
        return self.root / dataset / f"{safe_name(trial_id)}.parquet"


def chunk_name(seq: int) -> str:
    return f"{CHUNK_PREFIX}{seq:06d}.parquet"


def chunk_seq(path: Path) -> int:
    """The sequence number of a chunk part (-1 for a trial's own part)."""
    if not path.name.startswith(CHUNK_PREFIX):
        return -1
    try:
        return int(path.name[len(CHUNK_PREFIX):].split(".")[0])
    except ValueError:
        return -1


def list_parts(path: str | Path) -> list[Path]:
    """The parts of a dataset folder, the one whose rows of a trial win first: the trials' own
    parts, then the chunks, newest first."""
    parts = [p for p in Path(path).glob("*.parquet") if p.is_file()]
    own = sorted(p for p in parts if chunk_seq(p) < 0)
    chunks = sorted((p for p in parts if chunk_seq(p) >= 0), key=chunk_seq, reverse=True)
    return own + chunks


def parquet_exists(path: str | Path) -> bool:
    """A Parquet file, or a folder of parts holding at least one part."""
    path = Path(path)
    return path.is_file() or (path.is_dir() and any(path.glob("*.parquet")))


def read_parquet(path: str | Path, columns: list[str] | None = None,
                 trial_ids: set[str] | None = None) -> pa.Table:
    """Read a dataset of the study folder (a folder of parts, or the single file of a study
    written before parts existed) as one table.

    A folder holds each running trial's own part (``<trial_id>.parquet``) and chunks
    (``chunk~<n>.parquet``) of many trials' rows. A trial's rows are taken from the first part
    of :func:`list_parts` that has any: its own part, else the newest chunk (a trial resumed
    after a compaction is rewritten whole in its own part). Parts of different trials may have
    different columns (a method's metrics, a conditional knob) and different types for one
    column (int in one, float in another): schemas are unified (missing columns are null;
    numbers promoted), which ``pq.read_table(folder)`` does not do.

    ``columns``: only these (those a part lacks are left out); ``trial_ids``: only their rows.
    """
    for _ in range(5):
        try:
            return _read_parts(Path(path), columns, trial_ids)
        except FileNotFoundError:  # a compaction replaced parts listed a moment ago: list again
            continue
    return _read_parts(Path(path), columns, trial_ids)


def _read_one(part: Path, columns: list[str] | None, trial_ids: set[str] | None) -> pa.Table:
    # One read of the file's bytes, then parse them: pyarrow opens a path several times (footer,
    # then pages), and a writer may replace a running trial's part in between (an atomic rename:
    # each open sees a whole file, but not the same one), which read a footer of one file with
    # the pages of the next ("Page was smaller than expected").
    data = pa.py_buffer(part.read_bytes())
    if columns is not None:
        names = set(pq.read_schema(pa.BufferReader(data)).names)
        columns = [c for c in dict.fromkeys(["trial_id", *columns]) if c in names]
    filters = [("trial_id", "in", sorted(trial_ids))] if trial_ids is not None else None
    try:
        return pq.read_table(pa.BufferReader(data), columns=columns, filters=filters)
    except (pa.ArrowInvalid, KeyError):  # no trial_id column to filter on (an empty part)
        return pq.read_table(pa.BufferReader(data), columns=columns) if trial_ids is None else pa.table({})


def _read_parts(path: Path, columns: list[str] | None, trial_ids: set[str] | None) -> pa.Table:
    if path.is_file():
        return _read_one(path, columns, trial_ids)
    safe_ids = None if trial_ids is None else {safe_name(t) for t in trial_ids}
    seen: set[str] = set()
    tables = []
    for part in list_parts(path):
        if safe_ids is not None and chunk_seq(part) < 0 and part.stem not in safe_ids:
            continue  # another trial's own part: not opened
        table = _read_one(part, columns, trial_ids)
        if not table.num_columns:
            continue
        if "trial_id" in table.column_names:
            ids = table["trial_id"].cast(pa.string())
            if seen:
                table = table.filter(pc.invert(pc.is_in(ids, value_set=pa.array(sorted(seen), pa.string()))))
                ids = table["trial_id"].cast(pa.string())
            seen.update(pc.unique(ids).to_pylist())
        tables.append(table)
    return concat_tables(tables)


def concat_tables(tables: list[pa.Table]) -> pa.Table:
    """Tables of parts as one: missing columns null, numbers promoted, and a column whose type
    differs otherwise (a knob that is a number in one trial and a list in another) as text,
    JSON for the non-string values (the rule within one part, docs/results-schema.md)."""
    if not tables:
        return pa.table({})
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        pass
    types: dict[str, set[str]] = {}
    for table in tables:
        for f in table.schema:
            if not pa.types.is_null(f.type):
                types.setdefault(f.name, set()).add("num" if _numeric(f.type) else str(f.type))
    mixed = {name for name, kinds in types.items() if len(kinds) > 1}
    fixed = []
    for table in tables:
        for name in mixed & set(table.column_names):
            column = table[name]
            if not pa.types.is_string(column.type):
                text = [None if v is None else json.dumps(v) for v in column.to_pylist()]
                table = table.set_column(table.schema.get_field_index(name), name, pa.array(text, pa.string()))
        fixed.append(table)
    return pa.concat_tables(fixed, promote_options="permissive")


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)
