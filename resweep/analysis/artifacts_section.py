"""The dashboard's "Artifacts" section: what ``artifacts.parquet`` records (the teachers,
encoders and centroids a study made or reused) and which trials read each one."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from resweep.analysis import dashboard as dash
from resweep.analysis.load import StudyData
from resweep.study.layout import ARTIFACTS_FILE


def artifacts_frame(data: StudyData) -> pd.DataFrame:
    """One row per artifact: key, kind, status, seconds, when, its metrics, trials that read it."""
    path = Path(data.dir) / ARTIFACTS_FILE
    if not path.is_file():
        return pd.DataFrame()
    frame = pd.read_parquet(path)
    users: dict[str, int] = {}
    if "artifacts" in data.trials.columns:
        for text in data.trials["artifacts"].dropna():
            for key in json.loads(text).values():
                users[key] = users.get(key, 0) + 1
    frame["trials"] = [users.get(k, 0) for k in frame["key"]]
    frame["time"] = pd.to_datetime(frame["time"], unit="s").dt.strftime("%Y-%m-%d %H:%M:%S")
    metric_columns = sorted(c for c in frame.columns if c.startswith("metric."))
    columns = ["key", "kind", "status", "trials", "seconds", "time", *metric_columns, "notes", "error"]
    return frame[[c for c in columns if c in frame.columns]]


def artifacts_section(data: StudyData) -> dash.Section | None:
    """None when the study made no artifact (no method or model declared a stage)."""
    frame = artifacts_frame(data)
    if frame.empty:
        return None
    note = (
        '<p class="note">Made once per study before the trials (status <i>produced</i>), or '
        "found already made by another study or an earlier run (<i>reused</i>). "
        "<i>trials</i>: how many trials read it. Files: &lt;storage&gt;/artifacts/&lt;key&gt;/.</p>"
    )
    return dash.Section("artifacts", "Artifacts (stages)", dash.frame_block(frame, "artifacts-table") + note)
