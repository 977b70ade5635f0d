"""Plotly figure specs as plain dicts, serialised to script-safe JSON for the dashboard.

Figures are plain plotly.js specs (dicts) serialised here, so the page does not depend on
plotly.py's figure validation (slow for 100k-point curves). Every user string that goes into
a figure passes through :func:`plot_text` (HTML-escaped: plotly.js renders a subset of HTML in
labels, so an unescaped ``<a href>`` in a knob value would become a link).
"""

from __future__ import annotations

import html
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

from resweep.analysis.tables import html_escape

PLOT_CONFIG = {"displaylogo": False, "responsive": True}
_AS_IS = frozenset({str, int, bool})  # exact types json.dumps writes as they are


def plot_text(text: Any) -> str:
    """A user string as plotly text: ``& < >`` escaped (plotly.js parses a subset of HTML in
    labels and decodes these entities for display; it shows ``&quot;`` literally, and quotes
    are harmless inside a JSON string)."""
    return html.escape(str(text), quote=False)


def _array_json(a: np.ndarray) -> str:
    """A numeric array as JSON text: integers as such, other numbers to 6 significant digits
    (enough for plots and hover; full float64 text would triple the page), NaN/inf as null."""
    if a.dtype.kind == "b":
        return json.dumps(a.tolist())
    if a.dtype.kind in "iu":
        return "[" + ",".join(map(str, a.tolist())) + "]"
    a = a.astype(np.float64, copy=False)
    finite = np.isfinite(a)
    if finite.all() and np.array_equal(a, np.round(a)) and (np.abs(a) < 2**53).all():
        return "[" + ",".join(map(str, a.astype(np.int64).tolist())) + "]"
    fmt = "{:.6g}".format
    return "[" + ",".join(fmt(v) if ok else "null" for v, ok in zip(a.tolist(), finite.tolist(), strict=True)) + "]"


def script_json(obj: Any) -> str:
    """JSON safe inside ``<script>``: no ``</script>``, no HTML comment openers, no U+2028.

    Numeric numpy arrays are written by :func:`_array_json` (spliced in through placeholders
    carrying a random nonce, so no user string can collide with one).
    """
    nonce = secrets.token_hex(8)
    raw: list[str] = []

    def prepare(o: Any) -> Any:
        if o is None or type(o) in _AS_IS:  # most cells: the trial explorer's 10^5 strings
            return o
        if isinstance(o, np.ndarray):
            if o.dtype.kind in "biuf":
                raw.append(_array_json(o))
                return f"@@{nonce}:{len(raw) - 1}@@"
            return [prepare(v) for v in o.tolist()]
        if isinstance(o, dict):
            return {str(k): prepare(v) for k, v in o.items()}
        if isinstance(o, list | tuple):
            return [prepare(v) for v in o]
        if isinstance(o, np.integer):
            return int(o)
        if isinstance(o, np.floating | float):
            return float(o) if math.isfinite(o) else None
        if isinstance(o, np.bool_):
            return bool(o)
        return o

    text = json.dumps(prepare(obj), allow_nan=False, separators=(",", ":"))
    text = (
        text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )
    if raw:  # numbers only: nothing to escape in them
        text = re.sub(f'"@@{nonce}:(\\d+)@@"', lambda m: raw[int(m.group(1))], text)
    return text


@dataclass
class Figure:
    id: str
    data: list[dict[str, Any]]
    layout: dict[str, Any]
    height: int = 460

    def html(self) -> str:
        layout = {"height": self.height, "margin": {"l": 60, "r": 30, "t": 50, "b": 50}, **self.layout}
        return (
            f'<div id="{html_escape(self.id)}" class="plot" style="height:{self.height}px"></div>\n'
            f"<script>Plotly.newPlot({script_json(self.id)}, {script_json(self.data)}, "
            f"{script_json(layout)}, {script_json(PLOT_CONFIG)});</script>\n"
        )
