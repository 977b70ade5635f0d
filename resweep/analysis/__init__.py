"""Analysis of a study folder: ablation tables and a self-contained dashboard.

Reads only the study's own files (``study.json``, ``trials.parquet``, ``curves.parquet``,
``per_image.parquet``; schema in docs/results-schema.md), so it works on a study copied off a
cluster without Ray.

    from resweep.analysis import build_report, ablation_table
    report = build_report("studies/spn-alpha")      # -> report.index_path, report.tables
    df = ablation_table("studies/spn-alpha", metric="psnr_y", sets=["Set5"])
"""

from resweep.analysis.load import StudyData, StudyFolderError, load_study
from resweep.analysis.report import Report, build_report
from resweep.analysis.stats import paired_bootstrap_ci, pareto_mask
from resweep.analysis.tables import ablation_table, to_html, to_latex, to_markdown

__all__ = [
    "Report",
    "StudyData",
    "StudyFolderError",
    "ablation_table",
    "build_report",
    "load_study",
    "paired_bootstrap_ci",
    "pareto_mask",
    "to_html",
    "to_latex",
    "to_markdown",
]
