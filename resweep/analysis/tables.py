"""The ablation table's public API in one import (what the report, the dashboard and users call).

The work is split by responsibility:

- :mod:`resweep.analysis.rows`: trials -> rows and columns, the baseline row;
- :mod:`resweep.analysis.ablation`: the numbers (means over seeds, paired Δ with bootstrap CIs,
  counts, notes); the table's semantics are in its docstring;
- :mod:`resweep.analysis.reference`: the no-learning reference row (bicubic / noisy input);
- :mod:`resweep.analysis.findings`: the notes that say what the table shows (or that all rows tie);
- :mod:`resweep.analysis.render`: Markdown / LaTeX / HTML of a computed table;
- :mod:`resweep.analysis.formatting`: escaping, metric titles, number formats.
"""

from __future__ import annotations

from resweep.analysis.ablation import (
    COUNT_COLUMNS,
    PAIR_KEYS,
    AblationResult,
    ablation_table,
    best_row,
    compute_ablation,
    image_ranking,
    paired_differences,
    trials_table,
)
from resweep.analysis.formatting import (
    better,
    fmt_number,
    html_escape,
    latex_escape,
    md_escape,
    metric_decimals,
    metric_title,
)
from resweep.analysis.render import (
    frame_to_html,
    notes_html,
    to_html,
    to_latex,
    to_markdown,
    to_text,
)
from resweep.analysis.rows import (
    Column,
    Rows,
    assign_rows,
    choose_baseline,
    default_metrics,
    resolve_columns,
    short_names,
)

__all__ = [
    "COUNT_COLUMNS",
    "PAIR_KEYS",
    "AblationResult",
    "Column",
    "Rows",
    "ablation_table",
    "assign_rows",
    "best_row",
    "better",
    "choose_baseline",
    "compute_ablation",
    "default_metrics",
    "fmt_number",
    "frame_to_html",
    "html_escape",
    "image_ranking",
    "latex_escape",
    "md_escape",
    "metric_decimals",
    "metric_title",
    "notes_html",
    "paired_differences",
    "resolve_columns",
    "short_names",
    "to_html",
    "to_latex",
    "to_markdown",
    "to_text",
    "trials_table",
]
