"""The dashboard's "Stage diagnostics" section: what the methods of each stage's training run
reported about its network before and after training (``diagnostics/<name>.json`` in the
artifact, :mod:`resweep.methods.diagnostics`; e.g. RCL's Fig. 2, the density of
d(negative) − d(positive) before and after pretraining), one figure per artifact and name:
the groups as overlaid densities on shared bins (a diagnostic's ``reference_group``, e.g. the
true noise of RCL's Fig. 2, as a line over the bars), the share of each above the reference in
the legend and in an annotation."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from resweep.analysis import dashboard as dash
from resweep.analysis.figures import PALETTE
from resweep.analysis.load import StudyData
from resweep.analysis.plotly_spec import Figure, plot_text
from resweep.analysis.tables import html_escape
from resweep.methods.diagnostics import Diagnostic
from resweep.stages.produce import FAILED, split_artifact_uri
from resweep.stages.store import ArtifactStore
from resweep.stages.train import DIAGNOSTICS_DIR
from resweep.study.layout import ARTIFACTS_FILE

MAX_BINS = 80


@dataclass
class ArtifactDiagnostic:
    key: str
    users: list[str]  # labels of the trials that read the artifact
    diagnostic: Diagnostic


def artifact_diagnostics(data: StudyData) -> tuple[list[ArtifactDiagnostic], list[str]]:
    """The diagnostics of every committed artifact of the study, and notes on those unreadable."""
    path = Path(data.dir) / ARTIFACTS_FILE
    if not path.is_file():
        return [], []
    frame = pd.read_parquet(path)
    users: dict[str, set[str]] = {}
    if "artifacts" in data.trials.columns:
        for label, text in zip(data.trials["label"], data.trials["artifacts"], strict=True):
            if isinstance(text, str) and text:
                for key in json.loads(text).values():
                    users.setdefault(key, set()).add(str(label))
    found: list[ArtifactDiagnostic] = []
    notes: list[str] = []
    for row in frame.to_dict("records"):
        if row.get("status") == FAILED:
            continue
        key = str(row["key"])
        try:
            texts = _read(str(row.get("uri") or ""), key, Path(data.dir))
            diagnostics = [Diagnostic.from_json(t) for _, t in sorted(texts.items())]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            notes.append(f"{key}: diagnostics unreadable ({type(exc).__name__}: {exc})")
            continue
        found.extend(ArtifactDiagnostic(key, sorted(users.get(key, set())), d) for d in diagnostics)
    return found, notes


def _read(uri: str, key: str, study_dir: Path) -> dict[str, str]:
    """The artifact's diagnostic files where artifacts.parquet says it is, else in the study
    folder (the default storage, e.g. after the folder was moved)."""
    storages = [split_artifact_uri(uri)[0]] if uri else []
    storages.append(str(study_dir))
    for storage in storages:
        if "://" not in storage and not Path(storage).is_dir():
            continue
        store = ArtifactStore(storage)
        if store.committed(key) is not None:
            return store.read_texts(key, DIAGNOSTICS_DIR)
    return {}


def density_figure(item: ArtifactDiagnostic, figure_id: str) -> Figure | None:
    """Overlaid densities of the groups on shared bins; None without finite samples."""
    d = item.diagnostic
    groups = {g: np.asarray(v, dtype=float) for g, v in d.samples.items()}
    groups = {g: v[np.isfinite(v)] for g, v in groups.items()}
    groups = {g: v for g, v in groups.items() if v.size}
    if not groups:
        return None
    pooled = np.concatenate(list(groups.values()))
    bins = int(min(MAX_BINS, max(10, math.ceil(2 * math.sqrt(pooled.size)))))
    lo, hi = float(pooled.min()), float(pooled.max())
    if d.reference is not None:
        lo, hi = min(lo, d.reference), max(hi, d.reference)
    if hi <= lo:
        hi = lo + 1e-12
    edges = np.linspace(lo, hi, bins + 1)
    width = float(edges[1] - edges[0])
    traces, lines = [], []
    for i, (group, values) in enumerate(groups.items()):
        density, _ = np.histogram(values, bins=edges, density=True)
        share = d.share_above(group)
        summary = f"n={values.size}, median {np.median(values):.3g}"
        if not math.isnan(share):
            summary = f"{share:.0%} above {d.reference:g}, {summary}"
        lines.append(f"{plot_text(group)}: {summary}")
        name = f"{plot_text(group)} ({share:.0%} &gt; {d.reference:g})" if not math.isnan(share) else plot_text(group)
        colour = PALETTE[i % len(PALETTE)]
        hover = "%{x:.3g}: density %{y:.3g}<extra></extra>"
        if group == d.reference_group:
            # the curve the others are read against (e.g. the true noise in RCL's Fig. 2)
            traces.append({"type": "scatter", "mode": "lines", "line": {"shape": "hvh", "color": "#24292f", "width": 2},
                           "x": (edges[:-1] + width / 2), "y": density, "name": name, "hovertemplate": hover})
            continue
        traces.append({
            "type": "bar", "x": (edges[:-1] + width / 2), "y": density, "width": width,
            "name": name, "opacity": 0.55, "marker": {"color": colour}, "hovertemplate": hover,
        })
    used_by = ", ".join(item.users) if item.users else "no trial yet"
    layout = {
        "title": {"text": f"{plot_text(d.title)}<br><sub>artifact {plot_text(item.key)} (read by "
                          f"{plot_text(used_by)})</sub>"},
        "barmode": "overlay", "bargap": 0,
        "xaxis": {"title": {"text": plot_text(d.x_title)}}, "yaxis": {"title": {"text": "density"}},
        "legend": {"orientation": "h", "y": -0.2},
        "annotations": [{"xref": "paper", "yref": "paper", "x": 0.99, "y": 0.98, "xanchor": "right",
                         "yanchor": "top", "showarrow": False, "align": "right", "text": "<br>".join(lines),
                         "bgcolor": "rgba(255,255,255,0.8)"}],
    }
    if d.reference is not None:
        layout["shapes"] = [{"type": "line", "xref": "x", "yref": "paper", "x0": d.reference, "x1": d.reference,
                             "y0": 0, "y1": 1, "line": {"color": "#57606a", "dash": "dash", "width": 1}}]
    return Figure(figure_id, traces, layout, height=420)


def diagnostics_section(data: StudyData) -> dash.Section | None:
    """None when no artifact of the study carries diagnostics."""
    found, notes = artifact_diagnostics(data)
    if not found and not notes:
        return None
    body = []
    for i, item in enumerate(found):
        fig = density_figure(item, f"diagnostic-{i}")
        if fig is None:
            body.append(f'<p class="note">{html_escape(item.key)}: {html_escape(item.diagnostic.name)} has no finite samples.</p>')
            continue
        body.append(fig.html())
        if item.diagnostic.note:
            body.append(f'<p class="note">{html_escape(item.diagnostic.note)}</p>')
    body.extend(f'<p class="note">{html_escape(n)}</p>' for n in notes)
    body.append('<p class="note">Reported by the methods of each stage\'s training run before its first '
                "and after its last step, on fixed training data. Files: &lt;storage&gt;/artifacts/&lt;key&gt;/"
                "&lt;attempt&gt;/diagnostics/.</p>")
    return dash.Section("diagnostics", "Stage diagnostics", "".join(body))
