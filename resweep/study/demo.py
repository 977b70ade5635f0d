"""The main job: a small real study on the demo photographs, then its report."""

from __future__ import annotations

import time
from pathlib import Path

from resweep.presets import load_preset


def run_demo(study_dir: str | Path = "studies/demo", *, quiet: bool = False) -> Path:
    from resweep.analysis import build_report
    from resweep.study.runner import run_study

    started = time.perf_counter()
    study = load_preset("demo")
    print(f"resweep demo: {study.description.strip()}\n")
    study_dir = run_study(study, study_dir=study_dir, quiet=quiet)
    report = build_report(study_dir)
    minutes = (time.perf_counter() - started) / 60
    print(f"\ndemo finished in {minutes:.1f} min")
    print(f"  tables:    {report.out_dir / 'tables' / 'ablation.md'}")
    print(f"  dashboard: {report.index_path}  (open it in a browser; works offline)")
    ablation = report.tables.get("ablation")
    table_md = report.out_dir / "tables" / "ablation.md"
    if ablation is not None and table_md.is_file():
        print("\n" + table_md.read_text())
    return study_dir
