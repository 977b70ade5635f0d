"""Reading a study folder (the platform's own Parquet files, not Ray's folders) into frames.

Only ``study.json`` and ``trials.parquet`` are required: a study copied off a cluster, or one
that is still running, can be analysed from them alone. ``curves.parquet`` and
``per_image.parquet`` are optional; without them the report says what it had to leave out.
The schema is documented in docs/results-schema.md.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from resweep.errors import ResweepError
from resweep.status import ALL_STATUSES
from resweep.study.layout import (
    CURVES_FILE,
    IMAGES_DIR,  # noqa: F401  (re-exported: the dashboard reads images from here)
    META_FILE,
    PER_IMAGE_FILE,
    TRIALS_FILE,
    parquet_exists,
    read_parquet,
)

STATUSES = tuple(s.value for s in ALL_STATUSES)
SR_KINDS = ("sr", "denoise_sr", "realworld_sr")
PER_IMAGE_METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")

# values a knob takes when the thing it controls is switched off (for the default baseline row)
OFF_VALUES = frozenset({"0", "none", "null", "false", "off", "no", "", "[]", "{}", "disabled"})
OFF_LABELS = OFF_VALUES | {"baseline", "base", "vanilla", "default"}


class StudyFolderError(ResweepError, FileNotFoundError):
    """A study folder (or one of its required files) is missing or unreadable."""


@dataclass
class StudyData:
    """A study folder read into memory. ``trials`` gains a ``status`` for every row (missing
    statuses read as ``running``); ``per_image`` is empty when the file is absent."""

    dir: Path
    meta: dict[str, Any]
    trials: pd.DataFrame
    curves: pd.DataFrame
    per_image: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    # final_per_image of this very per_image frame (the table, its reference line and the image
    # ranking each ask for it; 10^6 rows at 10^4 trials)
    _final: tuple[pd.DataFrame, pd.DataFrame] | None = field(default=None, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ study.json views
    @property
    def name(self) -> str:
        return str(self.meta.get("name") or self.dir.name)

    @property
    def task_kind(self) -> str:
        task = self.meta.get("task") or {}
        return str(task.get("kind") or "sr")

    @property
    def is_sr(self) -> bool:
        return self.task_kind in SR_KINDS

    @property
    def objectives(self) -> list[dict[str, str]]:
        objectives = self.meta.get("objectives") or []
        return [{"metric": str(o["metric"]), "mode": str(o.get("mode") or "max")} for o in objectives]

    @property
    def variants(self) -> list[str]:
        return [str(v) for v in self.meta.get("variants") or []]

    @property
    def knobs(self) -> list[str]:
        """Knob paths: study.json's list, plus any ``param.*`` column it does not name."""
        knobs = [str(k) for k in self.meta.get("knobs") or []]
        for col in self.trials.columns:
            if col.startswith("param.") and col[6:] not in knobs:
                knobs.append(col[6:])
        return knobs

    @property
    def eval_sets(self) -> list[str]:
        """Evaluation sets in the order their ``final.eval.<set>.<metric>`` columns appear."""
        sets: list[str] = []
        for col in self.trials.columns:
            if col.startswith("final.eval."):
                name, _metric = col[len("final.eval."):].rsplit(".", 1)
                if name not in sets:
                    sets.append(name)
        if not sets and not self.per_image.empty:
            sets = [str(s) for s in pd.unique(self.per_image["set"])]
        return sets

    def final_per_image(self) -> pd.DataFrame:
        """Per-image rows at each trial's last evaluated iteration (computed once: do not modify it)."""
        pi = self.per_image
        if pi.empty:
            return pi
        if self._final is None or self._final[0] is not pi:
            last = pi.groupby("trial_id", sort=False)["iteration"].transform("max")
            self._final = (pi, pi[pi["iteration"] == last])
        return self._final[1]


def load_study(study_dir: str | Path) -> StudyData:
    """Read ``study_dir`` (see docs/results-schema.md). Raises :class:`StudyFolderError`
    naming the missing file when the folder, ``study.json`` or ``trials.parquet`` is absent."""
    path = Path(study_dir)
    if not path.exists():
        raise StudyFolderError(f"study folder not found: {path}")
    if not path.is_dir():
        raise StudyFolderError(f"not a study folder (a file, not a folder): {path}")
    meta_path = path / META_FILE
    trials_path = path / TRIALS_FILE
    if not parquet_exists(trials_path):
        raise StudyFolderError(
            f"{trials_path} is missing: not a study folder, or no trial has started yet "
            f"(a study folder holds {META_FILE}, {TRIALS_FILE}, {CURVES_FILE}, {PER_IMAGE_FILE})"
        )
    if not meta_path.is_file():
        raise StudyFolderError(
            f"{meta_path} is missing: copy it with the Parquet files (it names the knobs, "
            "objectives and baseline of the study)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise StudyFolderError(f"{meta_path} cannot be read: {exc}") from None
    if not isinstance(meta, dict):
        raise StudyFolderError(f"{meta_path} must hold a JSON object")

    notes: list[str] = []
    trials = _read(trials_path)
    trials = _normalise_trials(trials)
    curves_path, per_image_path = path / CURVES_FILE, path / PER_IMAGE_FILE
    if parquet_exists(curves_path):
        curves = _read(curves_path)
    else:
        curves = pd.DataFrame({"trial_id": pd.Series(dtype=str), "iteration": pd.Series(dtype=float)})
        notes.append(f"{CURVES_FILE} is missing: no learning curves")
    if parquet_exists(per_image_path):
        per_image = _read(per_image_path)
    else:
        per_image = pd.DataFrame()
        notes.append(f"{PER_IMAGE_FILE} is missing: no per-image Δ and no significance test")
    if not per_image.empty and not {"trial_id", "iteration", "set", "image"} <= set(per_image.columns):
        notes.append(f"{PER_IMAGE_FILE} lacks trial_id/iteration/set/image columns: ignored")
        per_image = pd.DataFrame()
    if not per_image.empty:
        per_image["set"] = per_image["set"].astype(str)
        per_image["image"] = per_image["image"].astype(str)
        per_image["trial_id"] = per_image["trial_id"].astype(str)
    if not curves.empty and "trial_id" in curves.columns:
        curves["trial_id"] = curves["trial_id"].astype(str)
    notes += provenance_notes(trials, meta)
    return StudyData(dir=path, meta=meta, trials=trials, curves=curves, per_image=per_image, notes=notes)


def provenance_notes(trials: pd.DataFrame, meta: dict[str, Any]) -> list[str]:
    """Where rows came from: trials reused from earlier studies (``reused_from``), results
    told to Optuna by a warm start, and `resweep extend` runs (resweep.study.warm_start, .extend)."""
    notes = []
    if "reused_from" in trials.columns:
        reused = trials["reused_from"].dropna()
        for source, n in reused.value_counts(sort=False).items():
            notes.append(f"{n} trial(s) reused from {source} (warm start: the same configuration, "
                         "data and code finished there; not rerun; column reused_from)")
    told = ((meta.get("warm_start") or {}).get("optuna_told") or {})
    for source, n in told.items():
        notes.append(f"Optuna was told {n} result(s) of {source} before its first draw (warm start)")
    for ext in meta.get("extensions") or []:
        added = " and ".join(x for x in (f"seeds {ext.get('seeds')}" if ext.get("seeds") else "",
                                         f"{ext.get('trials')} trial(s)" if ext.get("trials") else "") if x)
        notes.append(f"extended {ext.get('at')} by {added} (resweep extend)")
    return notes


def _read(path: Path) -> pd.DataFrame:
    try:
        return read_parquet(path).to_pandas()
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise StudyFolderError(f"{path} cannot be read as Parquet: {exc}") from None


def _normalise_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """Guarantee the columns every later step relies on (an empty file has none)."""
    trials = trials.copy()
    defaults: dict[str, Any] = {
        "trial_id": None, "label": "", "seed": 0, "status": "running", "error": None,
        "iterations": 0, "time_total_s": np.nan,
    }
    for col, default in defaults.items():
        if col not in trials.columns:
            trials[col] = pd.Series([default] * len(trials), index=trials.index, dtype=object)
    trials["trial_id"] = trials["trial_id"].astype(str)
    trials["label"] = trials["label"].fillna("").astype(str)
    trials["status"] = trials["status"].fillna("running").astype(str)
    return trials.reset_index(drop=True)


# --------------------------------------------------------------------------- knob values
def display_value(value: Any) -> str:
    """A knob value as a short, stable string (the row key of ablation tables).

    JSON-encoded lists/dicts stay as their JSON text; floats use ``g`` so 1e-4 and 0.0001 agree.
    """
    if value is None:
        return "none"
    if isinstance(value, bool | np.bool_):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return "none"
        if float(value).is_integer() and abs(value) < 1e15:
            return str(int(value))
        return format(float(value), "g")
    if isinstance(value, list | tuple | dict):
        return json.dumps(value)
    if isinstance(value, np.ndarray):
        return json.dumps(value.tolist())
    return str(value)


def display_column(series: pd.Series) -> pd.Series:
    """:func:`display_value` over a column, computed once per distinct value."""
    try:
        codes, uniques = pd.factorize(series, use_na_sentinel=True)
    except TypeError:  # unhashable cells (a list column from some other writer)
        return series.map(display_value).astype(object)
    names = np.array([display_value(u) for u in uniques] + ["none"], dtype=object)
    return pd.Series(names[codes], index=series.index, dtype=object)


def parse_value(text: str) -> Any:
    """A knob value typed by a user (``baseline: alpha=0``): JSON if it parses, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        low = text.strip().lower()
        return {"none": None, "null": None, "true": True, "false": False}.get(low, text.strip())


def sort_key(text: str) -> tuple[int, float, str]:
    """Order knob values: off/none first, then numbers by value, then text."""
    if text in ("none", ""):
        return (0, 0.0, "")
    try:
        return (1, float(text), "")
    except ValueError:
        return (2, 0.0, text)
