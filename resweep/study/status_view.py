"""``resweep status`` and ``resweep logs``: a study read from its folder alone.

Reads only ``study.json``, ``trials.parquet`` and the trials' log files, with pyarrow: no torch,
no Ray, no revalidation of configs, so it is fast and works on a study copied off a cluster
onto a laptop without torch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from resweep.errors import ResweepError
from resweep.status import Status
from resweep.study.layout import StudyLayout
from resweep.study.results import best_trial, count_ended, count_statuses, read_trials


def _layout(study_dir: str | Path) -> tuple[StudyLayout, dict[str, Any]]:
    layout = StudyLayout(Path(study_dir))
    if not layout.meta.is_file():
        raise ResweepError(f"{layout.root} is not a study folder (no {layout.meta.name})")
    try:
        meta = json.loads(layout.meta.read_text())
    except ValueError as exc:
        raise ResweepError(f"{layout.meta} cannot be read: {exc}") from None
    return layout, meta


def status_line(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    c = count_statuses(rows)
    done = count_ended(c)
    total = meta.get("total_trials")
    pending = max(0, (total or len(rows)) - done - c[Status.RUNNING.value])
    objective = (meta.get("objectives") or [{"metric": "loss.total", "mode": "min"}])[0]
    best = best_trial(rows, objective["metric"], objective.get("mode", "max"))
    best_text = (
        f"best {objective['metric']} {best['best.' + objective['metric']]:.4g} ({best['trial_id']})"
        if best else f"best {objective['metric']}: -"
    )
    total_text = f"/{total}" if total else ""
    return (
        f"[{time.strftime('%H:%M:%S')}] {meta.get('name')}: {done}{total_text} done "
        f"({c['finished']} finished, {c['pruned']} pruned, {c['diverged']} diverged, {c['errored']} errored), "
        f"{c['running']} running, {pending} pending | {best_text}"
    )


def print_status(study_dir: str | Path, trial: str | None = None) -> None:
    """The study's counts, best trial and one line per trial; with ``trial``, that trial's log."""
    if trial is not None:
        print_trial_log(study_dir, trial)
        return
    layout, meta = _layout(study_dir)
    rows = read_trials(layout.root)
    print(f"study {meta.get('name')}  ({layout.root})")
    print(status_line(meta, rows))
    rows = sorted(rows, key=lambda r: (r.get("label") or "", str(r.get("trial_id"))))
    objective = (meta.get("objectives") or [{"metric": "loss.total", "mode": "min"}])[0]
    key = f"final.{objective['metric']}"
    knobs = meta.get("knobs", [])
    header = ["trial", "status", "seed", "iter", *knobs, objective["metric"]]
    table = [header]
    for row in rows:
        value = row.get(key)
        table.append(
            [
                str(row.get("trial_id")),
                str(row.get("status")),
                str(row.get("seed")),
                str(row.get("iterations")),
                *[str(row.get(f"param.{k}", "")) for k in knobs],
                f"{value:.4f}" if isinstance(value, float) else "-",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    for row in rows:
        if row.get("status") == Status.ERRORED:
            print(f"\n{row['trial_id']} errored: {_error_summary(row.get('error'))}")
    if any(layout.trial_log(str(r["trial_id"])).is_file() for r in rows):
        print(f"\none trial's log: resweep logs {layout.root} TRIAL_ID")


def print_trial_log(study_dir: str | Path, trial_id: str, tail: int | None = None) -> None:
    layout, _ = _layout(study_dir)
    path = layout.trial_log(trial_id)
    if not path.is_file():
        known = sorted(p.name for p in layout.trial_dirs.iterdir()) if layout.trial_dirs.is_dir() else []
        hint = f"; trials with a log: {', '.join(known[:20])}" if known else ""
        raise ResweepError(f"no log for trial '{trial_id}' in {layout.root} ({path} does not exist){hint}")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    if tail:
        lines = lines[-tail:]
    print(f"==> {path} <==")
    print("\n".join(lines))


def _error_summary(error: str | None) -> str:
    """The line that says what went wrong: the driver's one-line summary (first line), or the
    last line of a traceback (errors recorded without a summary)."""
    lines = [line for line in (error or "").strip().splitlines() if line.strip()]
    if not lines:
        return "(no message)"
    return lines[0] if lines[0].startswith("trial ") else lines[-1].strip()
