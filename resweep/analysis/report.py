"""``build_report``: ablation tables (Markdown, LaTeX, HTML, CSV) and the dashboard of a study.

Layout of the output folder (default ``<study>/report``)::

    index.html                 the dashboard (self-contained, works offline)
    tables/ablation.{md,tex,html,csv}
    tables/trials.{csv,html}
    tables/image_ranking.csv   per-image Δ of the best row vs the baseline row (if per-image data)
    tables/importance.csv      hyperparameter importances (when computed)
    tables/pareto.csv          non-dominated trials (2+ objectives)
    agreement.json             agreement with the paper (studies with paper values)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from resweep.analysis import dashboard as dash
from resweep.analysis.agreement_section import agreement_section, write_agreement
from resweep.analysis.artifacts_section import artifacts_section
from resweep.analysis.diagnostics_section import diagnostics_section
from resweep.analysis.load import StudyData, load_study
from resweep.analysis.render import reuse_layouts
from resweep.analysis.stats import DEFAULT_N_BOOT, DEFAULT_SEED, Importance, param_importance
from resweep.analysis.tables import (
    AblationResult,
    Column,
    best_row,
    compute_ablation,
    html_escape,
    image_ranking,
    notes_html,
    short_names,
    to_html,
    to_latex,
    to_markdown,
    trials_table,
)
from resweep.analysis.trial_explorer import trial_explorer

IMPORTANCE_MAX_TRIALS = 1000
PAGE_ABLATION_ROWS = 100  # importance is fitted on a fixed random sample of larger studies
SAVE_IMAGES_TODO = (
    "No image crops: this study saved no outputs. Set <code>eval.save_images: true</code> and each "
    "trial's final evaluation writes <code>images/&lt;trial_id&gt;/&lt;set&gt;/&lt;image&gt;.png</code> "
    "in the study folder (with the targets in <code>images/_gt/</code> and the bicubic/noisy inputs in "
    "<code>images/_baseline/</code>); this section then shows crops of ground truth, input, baseline "
    "row and method row where they differ most. Until then: the ranking above."
)


@dataclass
class Report:
    """What :func:`build_report` wrote. ``tables``: ``ablation`` (see
    :func:`resweep.analysis.ablation_table`), ``trials``, and when available
    ``image_ranking``, ``importance``, ``pareto``."""

    index_path: Path
    out_dir: Path
    tables: dict[str, pd.DataFrame]
    files: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def build_report(
    study_dir: str | Path | StudyData,
    out_dir: str | Path | None = None,
    *,
    metric: str | Sequence[str] | None = None,
    sets: Sequence[str] | None = None,
    baseline: str | int | None = None,
    n_boot: int = DEFAULT_N_BOOT,
    seed: int = DEFAULT_SEED,
    robust: bool = False,
) -> Report:
    """Read a study folder's Parquet files and write its tables and dashboard.

    ``out_dir`` defaults to ``<study>/report``; ``metric``/``sets``/``baseline`` are passed to
    the ablation table (see :func:`resweep.analysis.ablation_table`); ``robust=True`` adds its
    IQM and probability-of-improvement columns (see :mod:`resweep.analysis.robust`). A study
    with paper values also gets ``agreement.json`` (see :mod:`resweep.analysis.agreement`).
    """
    data = study_dir if isinstance(study_dir, StudyData) else load_study(study_dir)
    out = Path(out_dir) if out_dir is not None else data.dir / "report"
    tables_dir = out / "tables"
    tables_dir.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []

    def write(name: str, text: str) -> None:
        path = tables_dir / name
        path.write_text(text, encoding="utf-8")
        files.append(path)

    result = compute_ablation(data, metric, sets, baseline, n_boot=n_boot, seed=seed, robust=robust)
    with reuse_layouts():
        return _build(data, out, result, files, write)


def _build(data: StudyData, out: Path, result: AblationResult, files: list[Path], write: Any) -> Report:
    ablation = result.table
    write("ablation.md", to_markdown(ablation))
    write("ablation.tex", to_latex(ablation))
    ablation_html, ablation_notes = to_html(ablation, notes=False), notes_html(ablation)  # once: 10^4 rows
    write("ablation.html", _standalone(f"Ablation: {data.name}", ablation_html + "\n" + ablation_notes))
    write("ablation.csv", ablation.to_csv(index=False))
    trials = trials_table(data, result.rows)
    write("trials.csv", trials.to_csv(index=False))
    write("trials.html", _standalone(f"Trials: {data.name}", dash.frame_to_html(trials, "trials")))
    tables: dict[str, pd.DataFrame] = {"ablation": ablation, "trials": trials}

    primary = _primary_column(data, result.columns)
    method_row = best_row(result, primary) if primary is not None else None
    ranking = (image_ranking(data, result, primary, method_row)
               if primary is not None and method_row is not None else pd.DataFrame())
    if not ranking.empty:
        tables["image_ranking"] = ranking
        write("image_ranking.csv", ranking.to_csv(index=False))

    importance = _importance(data, result)
    if importance.values:
        imp = pd.DataFrame(importance.values).rename_axis("knob").reset_index()
        tables["importance"] = imp
        write("importance.csv", imp.to_csv(index=False))

    colouring = dash.colour_groups(result)
    pareto_fig, pareto = dash.pareto_figure(data, result)
    if not pareto.empty:
        tables["pareto"] = pareto
        write("pareto.csv", pareto.to_csv(index=False))

    page = dash.Page(title=f"Study: {data.name}", subtitle=_subtitle(data, ablation))
    page.sections.append(dash.Section("ablation", "Ablation table", _page_ablation(result, primary, ablation_html)
                                      + ablation_notes
                                      + '<p class="note">Also in tables/ablation.md, .tex (booktabs), .html, .csv.</p>'))

    agreement = ablation.attrs.get("agreement")
    if agreement is not None:
        files.append(write_agreement(agreement, ablation.attrs, out))
        section = agreement_section(agreement)
        if section is not None:
            page.sections.append(section)

    fig = dash.curves_figure(data, result, colouring, primary)
    page.sections.append(dash.Section("curves", "Learning curves", fig.html() if fig else
                                      '<p class="note">No learning curves (curves.parquet empty or missing).</p>'))

    fig = dash.parcoords_figure(data, result)
    page.sections.append(dash.Section("parallel", "Knobs vs objectives", fig.html() if fig else
                                      '<p class="note">No finished trial with knobs and objective values yet.</p>'))

    titles = short_names(data.knobs)
    fig = dash.importance_figure(importance, titles)
    imp_body = fig.html() if fig else ""
    imp_notes = [n for n in (f"Evaluator: {importance.evaluator}." if importance.evaluator else "", importance.note) if n]
    imp_body += "".join(f'<p class="note">{html_escape(n)}</p>' for n in imp_notes)
    page.sections.append(dash.Section("importance", "Hyperparameter importance", imp_body))

    if pareto_fig is not None:
        page.sections.append(dash.Section("pareto", "Pareto front", pareto_fig.html()
                                          + dash.frame_block(pareto, "pareto-table", max_rows=50)))

    fig = dash.delta_figure(result, primary)
    page.sections.append(dash.Section("per-image", "Per-image Δ vs baseline", fig.html() if fig else
                                      '<p class="note">No per-image pairs with the baseline row yet '
                                      "(per_image.parquet missing, or no finished baseline trial).</p>"))

    page.sections.append(dash.Section("visual", "Largest gains and losses per image",
                                      _visual_body(data, result, ranking, method_row, primary)))
    page.sections.append(dash.Section("trials", "Trials", _trials_body(trials, data)))
    artifacts = artifacts_section(data)  # stages: teachers, encoders, centroids the study made
    if artifacts is not None:
        page.sections.append(artifacts)
    diagnostics = diagnostics_section(data)  # e.g. RCL's Fig. 2 from its pretraining artifacts
    if diagnostics is not None:
        page.sections.append(diagnostics)
    notes = list(ablation.attrs.get("notes", []))
    if notes:
        page.sections.append(dash.Section("notes", "Notes", "<ul>" + "".join(
            f"<li>{html_escape(n)}</li>" for n in notes) + "</ul>"))

    index = out / "index.html"
    index.write_text(dash.render_page(page), encoding="utf-8")
    files.append(index)
    return Report(index_path=index, out_dir=out, tables=tables, files=files, notes=notes)


def _page_ablation(result: AblationResult, primary: Column | None, full_html: str) -> str:
    """The ablation table in the page: whole when it is short; else the baseline row and the
    rows of largest and smallest Δ of the primary column (the whole table is in tables/)."""
    table = result.table
    if len(table) <= PAGE_ABLATION_ROWS or primary is None or f"{primary.key}:delta" not in table.columns:
        return dash.table_block(full_html)
    delta = pd.to_numeric(table[f"{primary.key}:delta"], errors="coerce")
    order = delta.sort_values(kind="stable").dropna().index
    half = PAGE_ABLATION_ROWS // 2
    keep = set(order[:half]) | set(order[-half:]) | set(table.index[table["baseline"].astype(bool)])
    if "reference" in table.columns:
        keep |= set(table.index[table["reference"].astype(bool)])
    shown = table.loc[sorted(keep)]
    shown.attrs = table.attrs
    return (f'<p class="note">{len(shown)} of {len(table)} rows: the baseline and the {half} rows of largest '
            f"and {half} of smallest Δ {html_escape(primary.key)}; every row in tables/ablation.html, .csv.</p>"
            + dash.table_block(to_html(shown, notes=False)))


def _primary_column(data: StudyData, columns: list[Column]) -> Column | None:
    """The column the figures focus on: the first objective if it is a table column."""
    keys = {c.key: c for c in columns}
    for o in data.objectives:
        if o["metric"] in keys:
            return keys[o["metric"]]
    with_sets = [c for c in columns if c.set is not None]
    return (with_sets or columns or [None])[0]


def _importance(data: StudyData, result: AblationResult) -> Importance:
    t = data.trials[data.trials["status"] == "finished"]
    sampled = ""
    if len(t) > IMPORTANCE_MAX_TRIALS:  # the forest's fit grows faster than the trials
        sampled = f"fitted on a random {IMPORTANCE_MAX_TRIALS} of the {len(t)} finished trials (seed 0)"
        t = t.sample(n=IMPORTANCE_MAX_TRIALS, random_state=0)
    knobs = [k for k in data.knobs if f"param.{k}" in t.columns]
    params = {k: [None if _missing(v) else v for v in t[f"param.{k}"].tolist()] for k in knobs}
    objectives = [
        (o["metric"], o["mode"], pd.to_numeric(t[f"final.{o['metric']}"], errors="coerce").to_numpy(dtype=float))
        for o in data.objectives if f"final.{o['metric']}" in t.columns
    ]
    if not objectives:
        return Importance({}, "", "skipped: no finished trial reports an objective")
    found = param_importance(params, objectives)
    if sampled:
        found.note = "; ".join(n for n in (sampled, found.note) if n)
    return found


def _missing(v: object) -> bool:
    return v is None or (isinstance(v, float) and v != v)


def _subtitle(data: StudyData, ablation: pd.DataFrame) -> str:
    task = data.meta.get("task") or {}
    task_text = ", ".join(f"{k}={v}" for k, v in task.items() if k in ("kind", "scale", "noise_sigma") and v is not None)
    counts = data.trials["status"].value_counts()
    status = ", ".join(f"{int(n)} {s}" for s, n in counts.items())
    planned = data.meta.get("total_trials")
    lines = [
        data.meta.get("description") or "",
        f"task: {task_text or '?'} · knobs: {', '.join(data.knobs) or 'none'} · seeds: {data.meta.get('seeds')}",
        f"trials: {len(data.trials)}{f' of {planned}' if planned else ''} ({status or 'none yet'}) · "
        f"objectives: {', '.join(o['metric'] + ' (' + o['mode'] + ')' for o in data.objectives) or 'none'}",
    ]
    if data.meta.get("created"):
        lines.append(f"created {data.meta['created']}")
    return "".join(f"<p>{html_escape(line)}</p>" for line in lines if line)


def _visual_body(data: StudyData, result: AblationResult, ranking: pd.DataFrame,
                 method_row: int | None, primary: Column | None) -> str:
    if ranking.empty or method_row is None or primary is None:
        return ('<p class="note">No ranking: needs per-image results of a finished row and of the '
                "baseline row.</p>" + f'<p class="todo">{SAVE_IMAGES_TODO}</p>')
    names = result.rows.frame["row"].astype(str)
    intro = (f"<p>Row <b>{html_escape(names[method_row])}</b> (best mean Δ {html_escape(primary.key)}) vs "
             f"baseline row <b>{html_escape(names[result.baseline_row])}</b>: the images with the largest "
             f"gains and losses in {html_escape(primary.metric)} (Δ averaged over seeds; "
             "input_baseline_value = bicubic / noisy input).</p>")
    crops, found = dash.visual_comparison(data, result, ranking, method_row)
    body = intro + dash.frame_block(ranking, "image-ranking")
    return body + (crops if found else f'<p class="todo">{SAVE_IMAGES_TODO}</p>')


def _trials_body(trials: pd.DataFrame, data: StudyData) -> str:
    problems = trials[trials["status"].isin(["diverged", "errored"])]
    body = ""
    if not problems.empty:
        shown = problems.assign(error=problems["error"].str.slice(0, 400))
        body += "<h3>Diverged and errored trials</h3>" + dash.frame_block(shown, "problems", max_rows=100)
    objective = data.objectives[0] if data.objectives else None
    sort_by = f"final.{objective['metric']}" if objective else None
    body += f"<h3>All {len(trials)} trials</h3>" + trial_explorer(
        trials, sort_by=sort_by, descending=objective is None or objective["mode"] == "max")
    return body


def _standalone(title: str, fragment: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html_escape(title)}</title>'
            f"<style>{dash.CSS}</style></head><body><main>{fragment}</main></body></html>\n")
