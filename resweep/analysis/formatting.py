"""Formatting shared by the analysis renderers: escaping for LaTeX/HTML/Markdown, metric titles,
numbers with the precision each metric is published with, and which direction is better."""

from __future__ import annotations

import functools
import html
import math
import re
from typing import Any

import numpy as np

from resweep.metrics.directions import metric_direction

# --------------------------------------------------------------------------- escaping
_LATEX_MAP = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
    "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "±": r"$\pm$", "Δ": r"$\Delta$", "—": "---", "–": "--", "−": r"$-$", "×": r"$\times$",
    "†": r"\dag{}", "…": r"\ldots{}", "·": r"$\cdot$",
    "\n": " ",
}
_LATEX_RE = re.compile("|".join(re.escape(k) for k in _LATEX_MAP))
# inside a table cell (never at line start) only inline-emphasis/code/link/pipe characters matter
_MD_RE = re.compile(r"([\\`*_\[\]|~])")
# a text with none of these is its own escape (the common case: numbers, ids; 10^5 cells a report)
_HTML_SPECIAL = re.compile("[&<>\"']")
_MD_SPECIAL = re.compile("[&<>\\\\`*_\\[\\]|~\n]")


def latex_escape(text: Any) -> str:
    """Escape every LaTeX special character (and map ±, Δ, — to their LaTeX forms)."""
    return _LATEX_RE.sub(lambda m: _LATEX_MAP[m.group(0)], str(text))


def html_escape(text: Any) -> str:
    text = str(text)
    return html.escape(text, quote=True) if _HTML_SPECIAL.search(text) else text


def md_escape(text: Any) -> str:
    """Markdown table cell: HTML-escaped (Markdown renders raw HTML) and Markdown-escaped."""
    text = str(text)
    if not _MD_SPECIAL.search(text):
        return text
    return _MD_RE.sub(r"\\\1", html.escape(text, quote=False)).replace("\n", " ")


# --------------------------------------------------------------------------- metric names
def metric_title(metric: str) -> str:
    """psnr_y -> PSNR-Y, ssim -> SSIM, niqe -> NIQE ↓ (lower is better), time_per_step -> time_per_step."""
    if metric == "niqe":
        return "NIQE ↓"
    base, _, suffix = metric.partition("_")
    if base in ("psnr", "ssim"):
        return base.upper() + (f"-{suffix.upper()}" if suffix == "y" else f" {suffix}" if suffix else "")
    return metric


@functools.lru_cache(maxsize=1024)
def metric_decimals(metric: str) -> int | None:
    name = metric.rsplit(".", 1)[-1]
    if name.startswith("psnr"):
        return 2
    if name.startswith("ssim"):
        return 4
    if name.startswith("niqe"):
        return 3  # as NIQE is published (e.g. 4.150)
    return None  # general numbers: 4 significant digits


def fmt_number(value: float, metric: str, signed: bool = False) -> str:
    if value is None or not _finite(value):
        return "—"
    dec = metric_decimals(metric)
    sign = "+" if signed else ""
    if dec is not None and round(value, dec) == 0:
        value = 0.0  # no "-0.0000"
    return f"{value:{sign}.{dec}f}" if dec is not None else f"{value:{sign}.4g}"


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(value)  # ~10x faster than np.isfinite on a scalar
    except TypeError:
        return bool(np.isfinite(value))


def better(metric: str, mode: str | None = None) -> str:
    """Direction in which a metric improves: the objective's mode, else the one table of directions."""
    return metric_direction(metric, mode)
