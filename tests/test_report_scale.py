"""The report of a large study summarises: bands and the extreme trials instead of every curve,
the extreme rows of the per-image Δ, a trial explorer with every trial; and stays escaped."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from resweep.analysis import build_report, pareto_mask
from resweep.analysis.stats import bootstrap_many, paired_bootstrap_ci, percentile_interval
from resweep.analysis.summary_figures import EXTREME_TRIALS, INDIVIDUAL_CURVES_MAX
from resweep.study.results import StudyResults

OBJECTIVE = "eval.Set5.psnr_y"
EVIL = "</script><img src=x onerror=alert(1)>&"


def _study(root, n_configs: int = 20, seeds: int = 3):
    meta = {"name": "large", "knobs": ["optim.lr", "model.note"], "seeds": list(range(seeds)), "variants": [],
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "iterations": 40, "total_trials": None,
            "task": {"kind": "sr", "scale": 2}}
    results = StudyResults(root, meta=meta)
    results.write_meta()
    rng = np.random.default_rng(0)
    finals = {}
    for c in range(n_configs):
        for s in range(seeds):
            tid = f"t{c:02d}_{s}"
            lr = 1e-4 * (c + 1)
            results.trial_started(tid, "", s, {"optim.lr": lr, "model.note": EVIL},
                                  {"optim": {"lr": lr}, "train": {"iterations": 40}})
            for it in range(4, 41, 4):
                psnr = 30 + 0.05 * c + 0.01 * it + rng.normal(0, 0.01)
                report = {"iteration": it, "loss.total": 1.0 / it + 0.001 * c, OBJECTIVE: psnr}
                if it % 20 == 0:
                    report["per_image"] = json.dumps([{"iteration": it, "set": "Set5", "image": f"im{k}.png",
                                                       "psnr_y": psnr + 0.1 * k, "ssim_y": 0.9} for k in range(3)])
                results.trial_result(tid, report)
            finals[tid] = psnr
            results.trial_completed(tid, {"status": "finished"}, total_iterations=40)
    results.compact()
    return finals


def _plot_data(page: str, fig_id: str) -> list[dict]:
    match = re.search(r'Plotly\.newPlot\("' + fig_id + r'", (\[.*?\]), \{', page)
    assert match, fig_id
    return json.loads(match.group(1))


def test_a_large_study_is_summarised_and_every_trial_stays_reachable(tmp_path):
    finals = _study(tmp_path / "s")
    assert len(finals) > INDIVIDUAL_CURVES_MAX
    report = build_report(tmp_path / "s")
    page = report.index_path.read_text()

    curves = _plot_data(page, "fig-curves")
    bands = [t for t in curves if t.get("fill") == "tonexty"]
    assert bands, "no 10-90 % band"
    named = [t["name"] for t in curves if t.get("legendgroup") in ("best", "worst") and t.get("visible")]
    ranked = sorted(finals, key=finals.get, reverse=True)  # independent: the trials' last reports
    expected = [f"best {i + 1}: {t}" for i, t in enumerate(ranked[:EXTREME_TRIALS])]
    expected += [f"worst {i + 1}: {t}" for i, t in enumerate(ranked[::-1][:EXTREME_TRIALS])]
    assert [n.split(" · ")[0] for n in named] == expected
    drawn = {tid for t in curves for tid in finals if tid in str(t.get("name"))}
    assert drawn == set(expected_id.split(": ")[1] for expected_id in expected)  # not every trial

    # the per-image Δ: at most DELTA_ROWS_MAX rows (20 rows here: all, minus the baseline)
    delta = _plot_data(page, "fig-delta")
    assert len({x for t in delta for x in t["x"]}) == 19

    # every trial is in the explorer's data, and user strings never reach the page unescaped
    explorer = page[page.index('id="trial-explorer"'):]
    assert all(tid in explorer for tid in finals)
    assert EVIL not in page and "<img src=x" not in page
    assert not re.search(r"<script[^>]+src=", page)  # no external scripts


def test_two_objective_pareto_front_matches_a_brute_force_check():
    rng = np.random.default_rng(1)
    values = np.round(rng.normal(size=(400, 2)), 1)  # many ties
    values[5] = values[6]  # exact duplicates: neither dominates the other
    values[7, 0] = np.nan
    for modes in (["max", "max"], ["max", "min"], ["min", "min"]):
        sign = np.array([1 if m == "max" else -1 for m in modes])
        v = values * sign
        expected = []
        for i in range(len(v)):
            if not np.isfinite(v[i]).all():
                expected.append(False)
                continue
            dominated = any(np.isfinite(v[j]).all() and (v[j] >= v[i]).all() and (v[j] > v[i]).any()
                            for j in range(len(v)))
            expected.append(not dominated)
        assert pareto_mask(values, modes).tolist() == expected


NODE_DOM = """
function El(tag){this.tag=tag;this.children=[];this.listeners={};this.value='';this._text='';this.className='';this.style={};}
El.prototype.appendChild=function(c){this.children.push(c);return c;};
El.prototype.addEventListener=function(t,f){this.listeners[t]=f;};
El.prototype.setAttribute=function(){};
Object.defineProperty(El.prototype,'textContent',{get:function(){return this._text+this.children.map(function(c){return c.textContent;}).join('\\t');},
  set:function(v){this._text=String(v);this.children=[];}});
var parts={input:new El('input'),select:new El('select'),'.tx-info':new El('span'),'thead tr':new El('tr'),tbody:new El('tbody')};
var root=new El('div');root.querySelector=function(s){return parts[s];};
var document={getElementById:function(){return root;},createElement:function(t){return new El(t);}};
"""


def test_the_trial_explorer_filters_and_sorts_every_trial(tmp_path):
    """The explorer's script run by node against a minimal DOM (the browser test needs chromium)."""
    import shutil
    import subprocess

    import pandas as pd
    import pytest

    from resweep.analysis.trial_explorer import SHOWN_ROWS, trial_explorer

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    n = SHOWN_ROWS + 50
    trials = pd.DataFrame({"trial_id": [f"t{i:04d}" for i in range(n)],
                           "status": ["finished" if i % 10 else "diverged" for i in range(n)],
                           "final.psnr": [float(i % 97) for i in range(n)],
                           "error": [EVIL if i == 3 else None for i in range(n)]})
    html = trial_explorer(trials, sort_by="final.psnr")
    script = re.search(r"<script>(.*)</script>", html, re.S).group(1)
    probe = """
var rows=function(){return parts.tbody.children.map(function(tr){return tr.children.map(function(td){return td.textContent;});});};
var out={all:rows().length,info:parts['.tx-info'].textContent,first:rows()[0]};
parts.select.value='diverged';parts.select.listeners.change();
out.diverged=rows().length;out.divergedInfo=parts['.tx-info'].textContent;
parts.select.value='';parts.input.value='T0003';parts.input.listeners.input();
out.search=rows();
console.log(JSON.stringify(out));
"""
    run = subprocess.run([node, "-e", NODE_DOM + script + probe], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["all"] == SHOWN_ROWS and out["info"] == f"{n} of {n} trials match (first {SHOWN_ROWS} shown)"
    assert out["first"][2] == "96"  # sorted by final.psnr, largest first
    assert out["diverged"] == n // 10 and out["divergedInfo"] == f"{n // 10} of {n} trials match"
    assert out["search"] == [["t0003", "finished", "3", EVIL]]  # the error text, as text


def test_the_fast_percentile_interval_is_numpys_quantile_bit_for_bit():
    rng = np.random.default_rng(3)
    for n_boot in (1, 2, 3, 4, 5, 50, 1999, 2000):
        for ci in (0.02, 0.5, 0.9, 0.95, 0.99, 0.999):
            boot = rng.normal(size=(40, n_boot))
            boot[5] = 1.25  # a constant cell
            boot[7, -1] = np.nan  # numpy's NaN result for a cell holding one
            alpha = (1 - ci) / 2
            boot[9, : n_boot // 2] = -0.5  # ties
            ref_low, ref_high = np.quantile(boot, [alpha, 1 - alpha], axis=1)
            for overwrite in (False, True):
                low, high = percentile_interval(boot.copy(), alpha, overwrite_input=overwrite)
                assert np.array_equal(low, ref_low, equal_nan=True), (n_boot, ci)
                assert np.array_equal(high, ref_high, equal_nan=True), (n_boot, ci)


def test_cells_batched_across_chunks_get_the_interval_each_gets_alone():
    rng = np.random.default_rng(4)
    groups = [rng.normal(0.1, 1, size=9) for _ in range(1100)]  # > 2 chunks of equal-size cells
    batched = bootstrap_many(groups, n_boot=200, seed=7)
    for i in (0, 511, 512, 1023, 1024, 1099):
        one = paired_bootstrap_ci(groups[i], n_boot=200, seed=7)
        draws = np.random.default_rng(7).integers(0, 9, size=(200, 9))
        ref = np.quantile(groups[i][draws].mean(axis=1), [0.025, 0.975])  # the plain loop-free definition
        # (BLAS may round a 512-column product and a 1-column one differently in the last bit)
        assert (batched[i].low, batched[i].high) == (pytest.approx(one.low, abs=1e-12), pytest.approx(one.high, abs=1e-12))
        assert (one.low, one.high) == (pytest.approx(ref[0], abs=1e-12), pytest.approx(ref[1], abs=1e-12))
