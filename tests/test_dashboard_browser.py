"""The dashboard opens in a real browser: headless Chromium loads the file offline, runs its
scripts without errors, and renders the plotly charts (DOM and screenshot both checked).

Needs the Debian package ``chromium`` (/usr/bin/chromium); skipped when it is missing.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
XSS = "<img src=x onerror=\"document.title='pwned'\">"
EXPECTED_PLOTS = ("fig-curves", "fig-parcoords", "fig-importance", "fig-pareto", "fig-delta")
JS_ERROR = re.compile(r"Uncaught|TypeError|ReferenceError|SyntaxError|RangeError")


def _chromium() -> str | None:
    for candidate in ("/usr/bin/chromium", "chromium", "chromium-browser"):
        found = shutil.which(candidate)
        if found:
            return found
    return None


def _study_writer():
    """The synthetic-study writer of test_analysis.py (loaded by path: works in any import mode)."""
    spec = importlib.util.spec_from_file_location("_resweep_test_analysis", HERE / "test_analysis.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from resweep.analysis import build_report

    w = _study_writer()
    combos = [(a, ch) for a in (0.0, 0.5, 1.0) for ch in ([32, 32], [64, 64])]
    labels = ["base", XSS, "skip_50%", "d", "e", "f"]
    rows = [(lab, {w.KNOB: a, "model.channels": ch}) for lab, (a, ch) in zip(labels, combos, strict=True)]
    objectives = [{"metric": "eval.Set5.psnr_y", "mode": "max"}, {"metric": "time_per_step", "mode": "min"}]
    study = w.make_study(
        tmp_path_factory.mktemp("browser") / "study", rows, objectives=objectives,
        statuses={(5, 0): "diverged", (4, 1): "running"}, baseline="base", name="browser <b>check</b>",
    )
    return build_report(study).index_path


def test_dashboard_renders_in_chromium(dashboard: Path, tmp_path: Path) -> None:
    chromium = _chromium()
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package 'chromium', /usr/bin/chromium)")
    shot = tmp_path / "dashboard.png"
    cmd = [
        chromium, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr", "--v=0",  # console messages (and uncaught errors) on stderr
        "--virtual-time-budget=8000", "--window-size=1400,2600", "--hide-scrollbars",
        f"--screenshot={shot}", "--dump-dom", dashboard.as_uri(),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    dom, log = proc.stdout, proc.stderr
    assert proc.returncode == 0 and dom, f"chromium failed ({proc.returncode}): {log[-2000:]}"

    # the page's own error recorder (window 'error' / 'unhandledrejection' listeners)
    status = re.search(r'<pre id="page-status"([^>]*)>([^<]*)</pre>', dom)
    assert status, "the status script did not run"
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', status.group(1)))
    assert attrs.get("data-js-errors") == "0", f"JavaScript errors: {status.group(2)}"
    console_errors = [line for line in log.splitlines() if ":CONSOLE" in line and JS_ERROR.search(line)]
    assert not console_errors, console_errors

    # every figure rendered into plotly SVG
    assert int(attrs["data-plots"]) == len(EXPECTED_PLOTS)
    assert int(attrs["data-svg"]) >= len(EXPECTED_PLOTS)
    for fig_id in EXPECTED_PLOTS:
        block = re.search(rf'<div id="{fig_id}"[^>]*class="[^"]*js-plotly-plot', dom)
        assert block, f"{fig_id} was not rendered by plotly"
    assert dom.count('class="main-svg"') >= len(EXPECTED_PLOTS)
    for layer in ("scatterlayer", "boxlayer", "barlayer", "parcoords"):
        assert layer in dom, layer
    # user strings stayed text: the onerror payload did not run
    assert "<title>Study: browser &lt;b&gt;check&lt;/b&gt;</title>" in dom
    assert "pwned" not in (re.search(r"<title>([^<]*)</title>", dom).group(1))

    # the screenshot shows charts, not a blank page
    from PIL import Image

    assert shot.is_file(), f"no screenshot: {log[-2000:]}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1400, 2600)
    small = img.resize((350, 650))
    pixels = list(small.getdata())
    non_white = sum(1 for p in pixels if min(p) < 235) / len(pixels)
    colours = len(img.getcolors(maxcolors=1 << 20) or [])
    assert non_white > 0.12, f"page looks blank: {non_white:.1%} non-white pixels"
    assert colours > 300, f"only {colours} distinct colours: charts missing?"
