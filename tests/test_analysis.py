"""Analysis layer: ablation tables checked against an independent computation from the raw
Parquet files (plain Python loops, no pandas), escaping, partial studies, the report files.

The synthetic study: 3 knob values x 3 seeds x 2 sets x 5 images, evaluated at iterations 50
and 100; one trial diverged after its first evaluation, one is still running (evaluated once).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resweep.analysis import StudyFolderError, ablation_table, build_report, load_study, pareto_mask
from resweep.analysis.stats import bootstrap_many, paired_bootstrap_ci

KNOB = "methods.spn.alpha"
SETS = ("Set5", "Urban_100")
IMAGES = ("baby", "bird", "butterfly", "head", "woman")
SEEDS = (0, 1, 2)
EVAL_ITERS = (50, 100)
METRICS = ("psnr", "ssim", "psnr_y", "ssim_y")
N_BOOT, BOOT_SEED, CI = 2000, 0, 0.95
SCRIPT = "<script>alert(1)</script>"


# --------------------------------------------------------------------------- synthetic study
def make_study(
    root: Path,
    rows: list[tuple[str, dict[str, Any]]],
    *,
    statuses: dict[tuple[int, int], str] | None = None,
    name: str = "spn alpha",
    baseline: str | None = None,
    paper: dict[str, Any] | None = None,
    objectives: list[dict[str, str]] | None = None,
    knobs: list[str] | None = None,
    task: dict[str, Any] | None = None,
    seed: int = 1234,
    effect: float = 0.25,
    row_noise: bool = True,
) -> Path:
    """Write a study folder the way resweep.study.results does (row dicts -> pyarrow).

    ``effect``: PSNR gain per row (SSIM: 0.04 x that); ``row_noise=False``: every row gets the
    same per-image noise, so with ``effect=0`` all rows are identical (an exact tie)."""
    rng = np.random.default_rng(seed)
    statuses = statuses or {}
    image_effect = {img: float(rng.normal(0, 2)) for img in IMAGES}
    trials, curves, per_image = [], [], []
    for r, (label, params) in enumerate(rows):
        for s in SEEDS:
            tid = f"t{r}_{s}"
            status = statuses.get((r, s), "finished")
            evals = EVAL_ITERS if status == "finished" else EVAL_ITERS[:1]
            last: dict[str, float] = {}
            for it in evals:
                for set_ in SETS:
                    acc = {m: [] for m in METRICS}
                    for img in IMAGES:
                        noise = rng if row_noise else np.random.default_rng(
                            [s, it, SETS.index(set_), IMAGES.index(img)])
                        psnr = 28 + effect * r + image_effect[img] + 0.1 * s + 0.5 * (it == 100) + noise.normal(0, 0.3)
                        ssim = 0.80 + 0.04 * effect * r + noise.normal(0, 0.01)
                        rec = {"trial_id": tid, "iteration": it, "set": set_, "image": img,
                               "psnr": psnr, "ssim": ssim, "psnr_y": psnr + 1.0, "ssim_y": ssim + 0.01,
                               "psnr_baseline": 25 + image_effect[img], "ssim_baseline": 0.7,
                               "psnr_y_baseline": 26 + image_effect[img], "ssim_y_baseline": 0.71}
                        per_image.append(rec)
                        for m in METRICS:
                            acc[m].append(rec[m])
                    for m in METRICS:
                        last[f"eval.{set_}.{m}"] = sum(acc[m]) / len(acc[m])
                curves.append({"trial_id": tid, "iteration": it, **last, "loss.total": 1.0 / it + 0.01 * r,
                               "lr": 1e-3, "time_per_step": 0.01, "eco.alpha": float(r), "status": "ok"})
            for it in range(10, (evals[-1] if status != "diverged" else 60) + 1, 10):
                if it not in evals:
                    curves.append({"trial_id": tid, "iteration": it, "loss.total": 1.0 / it + 0.01 * r,
                                   "lr": 1e-3, "time_per_step": 0.01, "eco.alpha": float(r),
                                   "status": "diverged" if status == "diverged" and it == 60 else "ok"})
            row = {"trial_id": tid, "label": label, "seed": s, "status": status,
                   "error": {"diverged": "loss diverged: nan",
                             "errored": f"Traceback ...\nValueError: bad {SCRIPT} 50%_&"}.get(status),
                   "iterations": evals[-1], "time_total_s": 12.5}
            for k, v in params.items():
                row[f"param.{k}"] = json.dumps(v) if isinstance(v, list | dict) else v
                row[f"config.{k}"] = row[f"param.{k}"]
            row["config.task.kind"] = "sr"
            for k, v in last.items():
                row[f"final.{k}"] = v
                row[f"best.{k}"] = v
            row["final.time_per_step"] = 0.01 + 0.001 * r
            row["final.loss.total"] = 0.001 * (r + 1)
            trials.append(row)
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(trials), root / "trials.parquet")
    pq.write_table(pa.Table.from_pylist(curves), root / "curves.parquet")
    pq.write_table(pa.Table.from_pylist(per_image), root / "per_image.parquet")
    has_labels = any(label for label, _ in rows)
    meta = {
        "name": name, "description": "synthetic", "knobs": knobs if knobs is not None else sorted({k for _, p in rows for k in p}),
        "seeds": list(SEEDS), "objectives": objectives or [{"metric": "eval.Set5.psnr_y", "mode": "max"}],
        "baseline": baseline, "variants": [label for label, _ in rows] if has_labels else [],
        "paper": paper, "iterations": 100, "total_trials": len(rows) * len(SEEDS),
        "task": task or {"kind": "sr", "scale": 4},
    }
    (root / "study.json").write_text(json.dumps(meta))
    return root


ALPHA_ROWS = [("", {KNOB: 0.0}), ("", {KNOB: 0.5}), ("", {KNOB: 1.0})]
ALPHA_STATUS = {(2, 2): "diverged", (1, 1): "running"}


@pytest.fixture(scope="module")
def alpha_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_study(tmp_path_factory.mktemp("alpha") / "study", ALPHA_ROWS, statuses=ALPHA_STATUS)


@pytest.fixture(scope="module")
def variant_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [("base", {KNOB: 0.0}), (SCRIPT, {KNOB: 0.5}), ("w/o skip_50% & more", {KNOB: 1.0}),
            ("all_gone", {KNOB: 2.0})]
    statuses = {**{(3, s): "diverged" for s in SEEDS}, (2, 2): "errored"}
    paper = {"table": "Tab. 3", "setting": "Set5 x4", "metric": "psnr",
             "values": {"base": 32.1, SCRIPT: 32.4, "all_gone": "collapse"}}
    return make_study(tmp_path_factory.mktemp("variants") / "study", rows, statuses=statuses,
                      name="abl_study & 100% <b>bold</b>", baseline="base", paper=paper)


def trained(df: Any) -> Any:
    """The table without its no-learning reference line (the last line, when present)."""
    return df[~df["reference"]]


# --------------------------------------------------------------------------- independent reference
def _read(path: Path) -> list[dict[str, Any]]:
    return pq.read_table(path).to_pylist()


def ref_cells(study: Path, key: str) -> dict[float, dict[str, Any]]:
    """Per knob value: mean, sample std (ddof=1) over seeds, n, counts -- from trials.parquet."""
    out: dict[float, dict[str, Any]] = {}
    for row in _read(study / "trials.parquet"):
        cell = out.setdefault(row[f"param.{KNOB}"], {"values": [], "status": []})
        cell["status"].append(row["status"])
        if row["status"] == "finished":
            cell["values"].append(row[f"final.{key}"])
    for cell in out.values():
        v = cell["values"]
        n = len(v)
        mean = sum(v) / n if n else math.nan
        cell["n"] = n
        cell["mean"] = mean
        cell["std"] = math.sqrt(sum((x - mean) ** 2 for x in v) / (n - 1)) if n > 1 else math.nan
    return out


def ref_pairs(study: Path, set_: str, metric: str, value: float, base_value: float) -> list[float]:
    """Paired differences over (seed, image), ordered by seed then image, at each trial's last
    evaluated iteration, finished trials only."""
    trials = {r["trial_id"]: r for r in _read(study / "trials.parquet")}
    rows = _read(study / "per_image.parquet")
    last: dict[str, int] = {}
    for r in rows:
        last[r["trial_id"]] = max(last.get(r["trial_id"], -1), r["iteration"])
    final: dict[tuple[float, int, str], float] = {}
    for r in rows:
        t = trials[r["trial_id"]]
        if t["status"] == "finished" and r["iteration"] == last[r["trial_id"]] and r["set"] == set_:
            final[(t[f"param.{KNOB}"], t["seed"], r["image"])] = r[metric]
    diffs = []
    for seed in sorted(SEEDS):
        for img in sorted(IMAGES):
            a, b = final.get((value, seed, img)), final.get((base_value, seed, img))
            if a is not None and b is not None:
                diffs.append(a - b)
    return diffs


def ref_bootstrap(diffs: list[float], n_boot: int = N_BOOT, seed: int = BOOT_SEED, ci: float = CI) -> tuple[float, float]:
    """Percentile bootstrap by plain loops: one scalar draw per resampled pair."""
    rng = np.random.default_rng(seed)
    n = len(diffs)
    means = []
    for _ in range(n_boot):
        total = 0.0
        for _ in range(n):
            total += diffs[int(rng.integers(0, n))]
        means.append(total / n)
    means.sort()

    def quantile(q: float) -> float:  # linear interpolation between order statistics
        h = (len(means) - 1) * q
        lo = math.floor(h)
        hi = min(lo + 1, len(means) - 1)
        return means[lo] + (h - lo) * (means[hi] - means[lo])

    alpha = (1 - ci) / 2
    return quantile(alpha), quantile(1 - alpha)


# --------------------------------------------------------------------------- tests: values
def test_ablation_values_match_independent_computation(alpha_study: Path) -> None:
    df = ablation_table(alpha_study)
    assert df.attrs["ddof"] == 1
    assert list(trained(df)["param." + KNOB]) == ["0", "0.5", "1"]
    assert bool(df.loc[0, "baseline"])  # no baseline in study.json: the knob-off row
    for set_ in SETS:
        for metric in ("psnr_y", "ssim_y"):  # SR task: Y channel by default
            key = f"eval.{set_}.{metric}"
            ref = ref_cells(alpha_study, key)
            for i, value in enumerate((0.0, 0.5, 1.0)):
                assert df.loc[i, f"{key}:n"] == ref[value]["n"]
                assert df.loc[i, f"{key}:mean"] == pytest.approx(ref[value]["mean"], abs=1e-12)
                assert df.loc[i, f"{key}:std"] == pytest.approx(ref[value]["std"], abs=1e-12)
            for i, value in enumerate((0.5, 1.0), start=1):
                diffs = ref_pairs(alpha_study, set_, metric, value, 0.0)
                assert len(diffs) == 10  # 2 finished seeds x 5 images
                low, high = ref_bootstrap(diffs)
                assert df.loc[i, f"{key}:pairs"] == len(diffs)
                assert df.loc[i, f"{key}:delta"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
                assert df.loc[i, f"{key}:ci_low"] == pytest.approx(low, abs=1e-9)
                assert df.loc[i, f"{key}:ci_high"] == pytest.approx(high, abs=1e-9)
                assert bool(df.loc[i, f"{key}:sig"]) == (low > 0 or high < 0)


def test_counts_of_a_partial_study(alpha_study: Path) -> None:
    df = trained(ablation_table(alpha_study))
    assert list(df["trials"]) == [3, 3, 3]
    assert list(df["finished"]) == [3, 2, 2]
    assert list(df["running"]) == [0, 1, 0]
    assert list(df["diverged"]) == [0, 0, 1]
    assert any("partial study: 7 of 9 trials finished" in n for n in df.attrs["notes"])
    from resweep.analysis.tables import to_markdown

    md = to_markdown(df)
    header = md.splitlines()[2]
    assert "n" in header and "diverged" in header and "running" in header
    assert "partial study" in md


def test_pending_counts_as_running(tmp_path: Path) -> None:
    study = make_study(tmp_path / "pend", ALPHA_ROWS, statuses={(0, 1): "pending"})
    df = trained(ablation_table(study))
    assert list(df["running"]) == [1, 0, 0] and list(df["finished"]) == [2, 3, 3]
    assert any(n.startswith("partial study: 8 of 9") for n in df.attrs["notes"])


def test_significance_mark_rendered(alpha_study: Path) -> None:
    from resweep.analysis.tables import to_html, to_markdown

    df = ablation_table(alpha_study)
    key = "eval.Set5.psnr_y"
    d = df.loc[2, f"{key}:delta"]  # alpha=1: +0.5 dB by construction, clearly significant
    assert bool(df.loc[2, f"{key}:sig"])
    assert f"{d:+.2f}\\*" in to_markdown(df)
    assert f'<td class="better num">{d:+.2f}*</td>' in to_html(df)


def test_explicit_baseline_metric_and_sets(alpha_study: Path) -> None:
    df = ablation_table(alpha_study, metric="psnr", sets=["Set5"], baseline="alpha=0.5")
    assert [c for c in df.columns if c.endswith(":mean")] == ["eval.Set5.psnr:mean"]
    assert bool(df.loc[1, "baseline"]) and df.attrs["baseline_reason"].startswith("requested")
    diffs = ref_pairs(alpha_study, "Set5", "psnr", 0.0, 0.5)
    assert df.loc[0, "eval.Set5.psnr:delta"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
    with pytest.raises(ValueError, match="matches no row"):
        ablation_table(alpha_study, baseline="alpha=7")
    with pytest.raises(ValueError, match="unknown evaluation set"):
        ablation_table(alpha_study, sets=["Nope"])
    # non-per-image metric: Δ is the difference of the cell means, no interval
    df = ablation_table(alpha_study, metric="time_per_step")
    assert df.loc[1, "time_per_step:delta"] == pytest.approx(0.001)
    assert not df["time_per_step:sig"].any()


def ref_reference(study: Path, set_: str, metric: str, base_value: float) -> tuple[list[float], list[float]]:
    """The no-learning reference from the raw files: (per-seed means of ``<metric>_baseline`` over
    the baseline row's finished trials, paired differences reference − baseline row by (seed, image))."""
    trials = {r["trial_id"]: r for r in _read(study / "trials.parquet")}
    rows = _read(study / "per_image.parquet")
    last: dict[str, int] = {}
    for r in rows:
        last[r["trial_id"]] = max(last.get(r["trial_id"], -1), r["iteration"])
    by_seed: dict[int, dict[str, tuple[float, float]]] = {}
    for r in rows:
        t = trials[r["trial_id"]]
        if (t["status"] == "finished" and t[f"param.{KNOB}"] == base_value and r["set"] == set_
                and r["iteration"] == last[r["trial_id"]]):
            by_seed.setdefault(t["seed"], {})[r["image"]] = (r[f"{metric}_baseline"], r[metric])
    seed_means, diffs = [], []
    for seed in sorted(by_seed):
        imgs = by_seed[seed]
        seed_means.append(sum(v[0] for v in imgs.values()) / len(imgs))
        diffs += [imgs[i][0] - imgs[i][1] for i in sorted(imgs)]
    return seed_means, diffs


def test_reference_row_matches_independent_computation(alpha_study: Path) -> None:
    from resweep.analysis.tables import to_html, to_latex, to_markdown

    df = ablation_table(alpha_study)
    assert list(df["reference"]) == [False, False, False, True]  # the last line, exactly one
    ref = df.iloc[-1]
    assert ref["row"] == "bicubic (no learning)" and not ref["baseline"]
    assert ref[["trials", "finished", "running", "diverged"]].sum() == 0
    for set_ in SETS:
        for metric in ("psnr_y", "ssim_y"):
            key = f"eval.{set_}.{metric}"
            seed_means, diffs = ref_reference(alpha_study, set_, metric, 0.0)
            assert len(seed_means) == 3 and len(diffs) == 15  # 3 seeds x 5 images of the baseline row
            assert ref[f"{key}:mean"] == pytest.approx(sum(seed_means) / 3, abs=1e-12)
            assert ref[f"{key}:n"] == 3 and ref[f"{key}:pairs"] == 15
            assert ref[f"{key}:delta"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-12)
            low, high = ref_bootstrap(diffs)
            assert (ref[f"{key}:ci_low"], ref[f"{key}:ci_high"]) == (pytest.approx(low, abs=1e-9),
                                                                     pytest.approx(high, abs=1e-9))
            assert bool(ref[f"{key}:sig"]) and ref[f"{key}:delta"] < 0  # bicubic is far below training
    # rendered as the first line (as SR papers list bicubic), deterministic: no "± 0.00"
    md_lines = to_markdown(df).splitlines()
    assert md_lines[4].startswith("| *bicubic (no learning)* |") and "±" not in md_lines[4]
    assert md_lines[5].startswith("| **0** |")
    assert "<tr class=\"reference\"><td>bicubic (no learning)</td>" in to_html(df)
    assert "bicubic (no learning)" in to_latex(df)
    notes = " ".join(df.attrs["notes"])
    gain = -ref["eval.Set5.psnr_y:delta"]
    assert f"the baseline row 'alpha=0' beats bicubic (no learning) by {gain:+.2f} dB" in notes
    assert "every row ties" not in notes and "effects whose 95% paired CI excludes 0" in notes
    assert len(ablation_table(alpha_study, reference=False)) == 3


def test_denoising_reference_is_the_noisy_input(tmp_path: Path) -> None:
    study = make_study(tmp_path / "dn", ALPHA_ROWS, task={"kind": "denoise", "scale": 1})
    df = ablation_table(study)
    assert df.iloc[-1]["row"] == "noisy input (no learning)" and bool(df.iloc[-1]["reference"])


def test_a_table_where_every_row_ties_says_so(tmp_path: Path) -> None:
    from resweep.analysis.tables import to_markdown, to_text

    study = make_study(tmp_path / "tie", ALPHA_ROWS, effect=0.0, row_noise=False)
    df = ablation_table(study)
    rows = trained(df)
    assert (rows.filter(like=":delta") == 0).all().all()  # identical rows: Δ exactly 0
    assert not rows.filter(like=":sig").any().any()
    md = to_markdown(df)
    assert "every row ties with the baseline row 'alpha=0'" in md
    assert "effects whose" not in md
    # the terminal rendering: aligned plain text, reference first, the same notes, no markup
    text = to_text(df, width=400)
    lines = text.splitlines()
    assert lines[3].startswith("bicubic (no learning)") and lines[4].split()[-1] == "baseline"
    assert len({len(line) for line in lines[1:3]}) == 1  # header and rule aligned
    assert "every row ties with the baseline row 'alpha=0'" in text and "\\" not in text and "**" not in text
    # the same study with a real +0.5 dB row says which row and by how much
    study = make_study(tmp_path / "effect", ALPHA_ROWS, effect=0.5, row_noise=False)
    notes = " ".join(ablation_table(study).attrs["notes"])
    assert "every row ties" not in notes and "alpha=1 +1.00 dB, 95% CI" in notes


def test_baseline_that_does_not_beat_the_reference_is_called_out(tmp_path: Path) -> None:
    study = make_study(tmp_path / "flat", ALPHA_ROWS)
    table = pq.read_table(study / "per_image.parquet").to_pandas()
    table["psnr_y_baseline"] = table["psnr_y"]  # training gained nothing over bicubic
    pq.write_table(pa.Table.from_pandas(table, preserve_index=False), study / "per_image.parquet")
    df = ablation_table(study, metric="psnr_y")
    assert df.iloc[-1]["eval.Set5.psnr_y:delta"] == 0 and not df.iloc[-1]["eval.Set5.psnr_y:sig"]
    notes = " ".join(df.attrs["notes"])
    assert "does NOT clearly beat bicubic (no learning)" in notes and "learned little" in notes


def test_denoising_uses_rgb(tmp_path: Path) -> None:
    study = make_study(tmp_path / "dn", ALPHA_ROWS, task={"kind": "denoise", "sigma": 25})
    df = ablation_table(study)
    assert "eval.Set5.psnr:mean" in df.columns and "eval.Set5.psnr_y:mean" not in df.columns


def test_bootstrap_vectorised_equals_loop() -> None:
    rng = np.random.default_rng(5)
    for n in (2, 7, 15):
        d = rng.normal(0.1, 1, size=n).tolist()
        low, high = ref_bootstrap(d, n_boot=500, seed=3)
        res = paired_bootstrap_ci(d, n_boot=500, seed=3)
        assert (res.low, res.high) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))
    # batching groups of equal size changes nothing
    groups = [rng.normal(size=7) for _ in range(3)] + [rng.normal(size=4)]
    batched = bootstrap_many(groups, n_boot=300, seed=1)
    for g, res in zip(groups, batched, strict=True):
        one = paired_bootstrap_ci(g, n_boot=300, seed=1)
        assert (res.low, res.high, res.mean) == pytest.approx((one.low, one.high, one.mean), abs=1e-12)
    assert math.isnan(paired_bootstrap_ci([1.0]).low)  # one pair: no interval


def test_pareto_mask() -> None:
    v = np.array([[1, 5], [2, 4], [1.5, 3], [3, 1], [np.nan, 9], [3, 1]])
    assert pareto_mask(v, ["max", "max"]).tolist() == [True, True, False, True, False, True]
    assert pareto_mask(v, ["min", "min"]).tolist() == [True, False, True, True, False, True]


# --------------------------------------------------------------------------- tests: rendering
def test_collapse_paper_and_escaping(variant_study: Path, tmp_path: Path) -> None:
    report = build_report(variant_study, out_dir=tmp_path / "rep")
    df = trained(report.tables["ablation"])
    assert list(df["row"]) == ["base", SCRIPT, "w/o skip_50% & more", "all_gone"]
    assert df.attrs["baseline_reason"] == "study baseline 'base'"
    gone = df.index[df["row"] == "all_gone"][0]
    assert df.loc[gone, "eval.Set5.psnr_y:cell"] == "collapse"
    assert list(df["paper"]) == [32.1, 32.4, None, "collapse"]

    tables = tmp_path / "rep" / "tables"
    md, tex, html = ((tables / f"ablation.{ext}").read_text() for ext in ("md", "tex", "html"))
    index = report.index_path.read_text()
    for text in (md, html, index, (tables / "trials.html").read_text()):
        assert SCRIPT not in text
        assert "<b>bold</b>" not in text
    for text in (html, index):
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
        assert "abl_study &amp; 100% &lt;b&gt;bold&lt;/b&gt;" in text
    assert "collapse" in md and "collapse" in tex and '<td class="collapse num">collapse</td>' in html
    # the errored trial: counted in its own column, its message escaped in the dashboard
    assert list(df["errored"]) == [0, 0, 1, 0] and "errored" in md.splitlines()[2]
    assert "ValueError: bad &lt;script&gt;alert(1)&lt;/script&gt; 50%_&amp;" in index
    # LaTeX: _, %, & escaped in labels and in the study name; booktabs rules
    assert r"w/o skip\_50\% \& more" in tex
    assert r"abl\_study \& 100\% \textless{}b\textgreater{}bold" in tex
    assert r"\textless{}script\textgreater{}alert(1)" in tex
    assert "\\toprule" in tex and "\\midrule" in tex and "\\bottomrule" in tex
    body = tex.split("\\midrule")[1].split("\\bottomrule")[0]
    assert not re.search(r"(?<!\\)[_%#]", body)  # no unescaped specials in the rows
    n_cells = {len(re.findall(r"(?<!\\)&", line)) for line in body.strip().splitlines()}
    assert len(n_cells) == 1  # every row has the same number of cells (no stray alignment &)
    # paper column beside ours
    assert "paper Tab. 3" in md and "paper Tab. 3" in html and "paper Tab. 3" in tex
    assert "32.40" in md and "32.10" in html


def test_markdown_escapes_pipes_and_html(tmp_path: Path) -> None:
    from resweep.analysis.tables import md_escape

    assert md_escape("a|b") == "a\\|b"
    assert md_escape("<i>x</i>") == "&lt;i&gt;x&lt;/i&gt;"
    study = make_study(tmp_path / "p", [("a|b", {KNOB: 0.0}), ("c", {KNOB: 1.0})])
    md = build_report(study).index_path.parent.joinpath("tables", "ablation.md").read_text()
    header_cells = md.splitlines()[2].count(" | ")
    for line in md.splitlines()[4:6]:
        assert line.replace("\\|", "").count(" | ") == header_cells


def test_report_files_and_dashboard(alpha_study: Path, tmp_path: Path) -> None:
    report = build_report(alpha_study, out_dir=tmp_path / "out")
    assert report.index_path == tmp_path / "out" / "index.html"
    for name in ("ablation.md", "ablation.tex", "ablation.html", "ablation.csv", "trials.csv",
                 "trials.html", "image_ranking.csv"):
        assert (tmp_path / "out" / "tables" / name).is_file(), name
    page = report.index_path.read_text()
    assert not re.search(r"<script[^>]+src=", page)  # plotly.js inline, nothing fetched
    assert not re.search(r"<link[^>]+href=\"?https?:", page)
    assert "https://cdn" not in "".join(re.findall(r"<script[^>]*>", page))
    for fig in ("fig-curves", "fig-parcoords", "fig-delta"):
        assert f'Plotly.newPlot("{fig}"' in page
    assert "eval.save_images" in page  # no saved outputs: the TODO note, not invented pixels
    assert "skipped: 1 knob(s) vary" in page  # importance needs 2 knobs
    assert 'id="ablation"' in page
    assert set(report.tables) >= {"ablation", "trials", "image_ranking"}
    ranking = report.tables["image_ranking"]
    assert set(ranking["kind"]) <= {"gain", "loss"} and len(ranking) <= 10


def test_default_out_dir_and_cli_contract(alpha_study: Path) -> None:
    report = build_report(str(alpha_study))
    assert report.index_path == alpha_study / "report" / "index.html"
    assert report.index_path.is_file()


def test_importance_and_pareto_with_two_knobs(tmp_path: Path) -> None:
    rows = [("", {KNOB: a, "model.channels": ch}) for a in (0.0, 0.5, 1.0) for ch in ([32, 32], [64, 64])]
    objectives = [{"metric": "eval.Set5.psnr_y", "mode": "max"}, {"metric": "time_per_step", "mode": "min"}]
    study = make_study(tmp_path / "two", rows, objectives=objectives)
    report = build_report(study)
    df = trained(report.tables["ablation"])
    assert len(df) == 6 and list(df["param.model.channels"][:2]) == ["[32, 32]", "[64, 64]"]
    imp = report.tables["importance"]
    assert set(imp["knob"]) == {KNOB, "model.channels"}
    assert imp["eval.Set5.psnr_y"].sum() == pytest.approx(1.0)
    pareto = report.tables["pareto"]
    assert len(pareto) >= 1
    page = report.index_path.read_text()
    assert 'Plotly.newPlot("fig-importance"' in page and 'Plotly.newPlot("fig-pareto"' in page


def test_saved_images_give_crops(tmp_path: Path) -> None:
    from PIL import Image

    study = make_study(tmp_path / "img", ALPHA_ROWS)
    rng = np.random.default_rng(0)
    for set_ in SETS:
        for img in IMAGES:
            gt = rng.integers(0, 255, size=(40, 48, 3), dtype=np.uint8)
            folders = {"_gt": gt, "_baseline": gt // 2}
            for r in range(3):
                for s in SEEDS:
                    folders[f"t{r}_{s}"] = np.clip(gt.astype(int) + rng.integers(-20, 20, gt.shape) // (r + 1), 0, 255)
            for folder, arr in folders.items():
                path = study / "images" / folder / set_ / f"{img}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr.astype(np.uint8)).save(path)
    page = build_report(study).index_path.read_text()
    assert page.count('src="data:image/png;base64,') >= 4
    assert "ground truth" in page


# --------------------------------------------------------------------------- tests: errors
def test_missing_study_dir(tmp_path: Path) -> None:
    with pytest.raises(StudyFolderError, match="study folder not found"):
        load_study(tmp_path / "nope")
    with pytest.raises(FileNotFoundError):  # also a FileNotFoundError for callers
        build_report(tmp_path / "nope")


def test_missing_trials_parquet(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "study.json").write_text("{}")
    with pytest.raises(StudyFolderError, match=r"trials\.parquet is missing"):
        ablation_table(tmp_path / "s")


def test_missing_study_json(alpha_study: Path, tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "trials.parquet").write_bytes((alpha_study / "trials.parquet").read_bytes())
    with pytest.raises(StudyFolderError, match=r"study\.json is missing"):
        build_report(tmp_path / "s")


def test_only_trials_file(alpha_study: Path, tmp_path: Path) -> None:
    """A study copied without curves/per-image files still gives a table, with notes."""
    (tmp_path / "s").mkdir()
    for name in ("trials.parquet", "study.json"):
        (tmp_path / "s" / name).write_bytes((alpha_study / name).read_bytes())
    report = build_report(tmp_path / "s")
    df = report.tables["ablation"]
    assert df["eval.Set5.psnr_y:pairs"].eq(0).all()
    ref = ref_cells(alpha_study, "eval.Set5.psnr_y")
    assert df.loc[1, "eval.Set5.psnr_y:delta"] == pytest.approx(ref[0.5]["mean"] - ref[0.0]["mean"])
    assert any("per_image.parquet is missing" in n for n in df.attrs["notes"])


def test_empty_trials_file(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    pq.write_table(pa.table({}), tmp_path / "s" / "trials.parquet")
    (tmp_path / "s" / "study.json").write_text(json.dumps({"name": "empty", "variants": ["a", "b"]}))
    df = build_report(tmp_path / "s").tables["ablation"]
    assert list(df["row"]) == ["a", "b"] and list(df["trials"]) == [0, 0]


def test_a_rows_caveats_are_notes_of_the_table_and_escaped(tmp_path: Path) -> None:
    """A method's notes (e.g. a stand-in encoder, not the paper's setting) stored per trial become
    one note per row of the table, in every rendering, escaped in HTML."""
    from resweep.analysis.tables import to_html, to_markdown

    rows = [("base", {KNOB: 0.0}), ("+KMAE", {KNOB: 0.5})]
    study = make_study(tmp_path / "notes", rows, baseline="base")
    table = pq.read_table(study / "trials.parquet").to_pylist()
    caveat = "mae_loss: KMAE STAND-IN <pretrained here>, not the paper's setting"
    for row in table:
        row["notes"] = caveat if row["label"] == "+KMAE" else None
    pq.write_table(pa.Table.from_pylist(table), study / "trials.parquet")
    notes = ablation_table(study).attrs["notes"]
    assert notes.count(f"+KMAE: {caveat}") == 1, notes  # once per row, not once per seed
    assert not any(n.startswith("base:") for n in notes)
    assert "KMAE STAND-IN" in to_markdown(ablation_table(study))  # markdown-escaped
    html = to_html(ablation_table(study))
    assert "&lt;pretrained here&gt;" in html and "<pretrained here>" not in html


def test_niqe_is_a_default_column_where_a_set_computed_it(tmp_path: Path) -> None:
    """NIQE is opt-in per evaluation set: the table shows it, titled lower-is-better, for the
    sets that have it and no others, and its Δ is the paired mean difference like PSNR's."""
    from resweep.analysis.tables import to_markdown

    rows = [("base", {KNOB: 0.0}), ("+mae", {KNOB: 0.5})]
    study = make_study(tmp_path / "niqe", rows, baseline="base")
    images = pq.read_table(study / "per_image.parquet").to_pylist()
    for rec in images:  # NIQE on Set5 only; row 1 lowers it by 0.2 on every image
        if rec["set"] == "Set5":
            rec["niqe"] = 5.0 + 0.01 * IMAGES.index(rec["image"]) - (0.2 if rec["trial_id"].startswith("t1_") else 0.0)
    pq.write_table(pa.Table.from_pylist(images), study / "per_image.parquet")
    trials = pq.read_table(study / "trials.parquet").to_pylist()
    for row in trials:
        last = max(r["iteration"] for r in images if r["trial_id"] == row["trial_id"])
        values = [r["niqe"] for r in images if r["trial_id"] == row["trial_id"] and r["set"] == "Set5"
                  and r["iteration"] == last]
        row["final.eval.Set5.niqe"] = row["best.eval.Set5.niqe"] = sum(values) / len(values)
    pq.write_table(pa.Table.from_pylist(trials), study / "trials.parquet")
    df = ablation_table(study)
    assert "eval.Set5.niqe:mean" in df.columns
    assert not any(c.startswith("eval.Urban_100.niqe") for c in df.columns)
    finished = trained(df).set_index("row")
    assert finished.at["+mae", "eval.Set5.niqe:delta"] == pytest.approx(-0.2, abs=1e-9)
    assert "NIQE ↓" in to_markdown(df)
