"""The main job: a small real study on the demo photographs, then its report.

It ends with what a user came for: the ablation table as plain text (bicubic as its own row,
Δ with paired CIs, and notes saying whether training beats bicubic and which rows show an
effect, or that every row ties), the dashboard's path, and the study's wall time.
"""

from __future__ import annotations

import time
from pathlib import Path

from resweep.presets import load_preset


def run_demo(study_dir: str | Path = "studies/demo", *, quiet: bool = False) -> Path:
    from resweep.analysis import build_report
    from resweep.analysis.tables import to_text
    from resweep.study.runner import run_study

    started = time.perf_counter()
    study = load_preset("demo")
    print(f"resweep demo: {' '.join(study.description.split())}\n")
    study_dir = run_study(study, study_dir=study_dir, quiet=quiet)
    study_seconds = time.perf_counter() - started
    report = build_report(study_dir)
    ablation = report.tables.get("ablation")
    if ablation is not None:
        print("\n" + to_text(ablation))
    print(f"demo finished: study {study_seconds / 60:.1f} min, report {time.perf_counter() - started - study_seconds:.0f} s")
    print(f"  tables:    {report.out_dir / 'tables'}  (ablation.md, .tex, .html, .csv)")
    print(f"  dashboard: {report.index_path}  (open it in a browser; works offline)")
    return study_dir
