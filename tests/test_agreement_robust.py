"""Agreement with the paper on constructed studies whose answer is known, Kendall's τ-b against
scipy, and the rliable-style robust columns against a float64 reference (and against rliable
itself where it is importable)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.stats

from resweep.analysis import ablation_table, build_report
from resweep.analysis.agreement import kendall_tau_b
from resweep.analysis.robust import iqm_ci, poi_ci
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED
from resweep.cli import main
from tests.synthetic_studies import IMAGES, OBJECTIVE, Row, image_offsets, write_study

EVIL = "<img src=x onerror=alert(1)>"
OFF = image_offsets()


def noise(row: int, seed: int, img: str, sd: float = 0.05) -> float:
    return float(np.random.default_rng([row, seed, IMAGES.index(img)]).normal(0, sd))


def base_value(s: int, img: str) -> float:
    return 30 + OFF[img] + 0.05 * s + noise(0, s, img)


def alternating(s: int, img: str) -> float:
    """± 0.1 around the baseline, half the pairs each way: mean Δ exactly 0, CI around 0."""
    return base_value(s, img) + (0.1 if (s + IMAGES.index(img)) % 2 else -0.1)


# label, value, paper value, expected verdict
ROWS = [
    Row("base", base_value),
    Row("gain", lambda s, img: base_value(s, img) + 0.5 + noise(1, s, img)),
    Row(EVIL, lambda s, img: base_value(s, img) - 0.4 + noise(2, s, img)),
    Row("tie", alternating),
    Row("gone", base_value, diverged=(0, 1, 2)),
    Row("trains", lambda s, img: base_value(s, img) + 0.1),
    Row("other_seeds", lambda s, img: base_value(s, img) + 0.3, seeds=(5, 6)),
    Row("half_gone", base_value, diverged=(0,)),
    Row("not_in_paper", base_value),
]
PAPER = {"table": "Tab. 9", "setting": "Set5 x4", "metric": "psnr",
         "values": {"base": 32.0, "gain": 32.3, EVIL: 32.2, "tie": 31.9, "gone": "collapse",
                    "trains": "collapse", "other_seeds": 32.1, "half_gone": "collapse"}}
EXPECTED = {"base": None, "gain": "agree", EVIL: "disagree", "tie": "undecided", "gone": "agree",
            "trains": "disagree", "other_seeds": "undecided", "half_gone": "undecided"}


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_study(tmp_path_factory.mktemp("agree") / "s", ROWS, name=f"paper {EVIL}", baseline="base",
                       paper=PAPER)


def test_kendall_tau_b_matches_scipy() -> None:
    rng = np.random.default_rng(0)
    for n in (2, 3, 7, 20):
        for _ in range(20):
            x = rng.integers(0, 4, size=n).astype(float)  # ties on both sides
            y = rng.integers(0, 4, size=n) + rng.choice([0, 0.5], size=n)
            ours = kendall_tau_b(x, y)["tau"]
            ref = scipy.stats.kendalltau(x, y).statistic
            assert (math.isnan(ours) and math.isnan(ref)) or ours == pytest.approx(ref, abs=1e-12)
    assert math.isnan(kendall_tau_b([1.0], [2.0])["tau"])
    assert kendall_tau_b([1, 2, 3], [1, 2, 3])["tau"] == 1.0 and kendall_tau_b([1, 2, 3], [3, 2, 1])["tau"] == -1.0


def test_agreement_on_a_constructed_study(study: Path, tmp_path: Path) -> None:
    df = ablation_table(study)
    agreement = df.attrs["agreement"]
    assert agreement["column"] == OBJECTIVE and agreement["baseline"] == "base"
    verdicts = {r["row"]: r["verdict"] for r in agreement["rows"]}
    assert verdicts == EXPECTED  # not_in_paper has no paper value: not judged, not listed
    by_row = {r["row"]: r for r in agreement["rows"]}
    assert by_row["gain"]["paper_delta"] == pytest.approx(0.3) and by_row["gain"]["ci_low"] > 0
    assert by_row[EVIL]["ci_high"] < 0 and by_row["tie"]["delta"] == pytest.approx(0.0, abs=1e-12)
    assert by_row["other_seeds"]["pairs"] == 0 and by_row["other_seeds"]["ci_low"] is None
    assert agreement["counts"] == {"agree": 2, "disagree": 2, "undecided": 3}

    # τ-b over the rows with a numeric paper value and a mean of ours, against scipy
    numeric = [r for r in agreement["rows"] if isinstance(r["paper"], float) and r["mean"] is not None]
    assert {r["row"] for r in numeric} == {"base", "gain", EVIL, "tie", "other_seeds"}
    ref = scipy.stats.kendalltau([r["mean"] for r in numeric], [r["paper"] for r in numeric]).statistic
    assert agreement["kendall"]["tau"] == pytest.approx(ref, abs=1e-12) and agreement["kendall"]["n"] == 5
    # our means by hand (float64): the order the paper's values are compared with
    means = {lab: np.mean([np.mean([ROWS[i].value(s, img) for img in IMAGES]) for s in ROWS[i].seeds])
             for i, lab in enumerate(r.label for r in ROWS) if lab in {r["row"] for r in numeric}}
    ref2 = scipy.stats.kendalltau([means[r["row"]] for r in numeric], [r["paper"] for r in numeric]).statistic
    assert agreement["kendall"]["tau"] == pytest.approx(ref2, abs=1e-12)

    note = [n for n in df.attrs["notes"] if n.startswith("agreement with the paper")]
    assert len(note) == 1 and "2 agree, 2 disagree, 3 undecided" in note[0]
    assert "collapse rows: 1 of 3 collapse here" in note[0]

    report = build_report(study, out_dir=tmp_path / "rep")
    doc = json.loads((tmp_path / "rep" / "agreement.json").read_text())
    assert {r["row"]: r["verdict"] for r in doc["rows"]} == EXPECTED
    assert doc["kendall"]["tau"] == pytest.approx(ref, abs=1e-12) and doc["paper"]["table"] == "Tab. 9"
    page = report.index_path.read_text()
    assert 'id="agreement"' in page and 'id="fig-agreement"' in page and EVIL not in page
    md = (tmp_path / "rep" / "tables" / "ablation.md").read_text()
    assert "agreement with the paper" in md and EVIL not in md


def test_a_study_without_paper_values_has_no_agreement(tmp_path: Path) -> None:
    s = write_study(tmp_path / "s", ROWS[:2], baseline="base")
    df = ablation_table(s)
    assert df.attrs["agreement"] is None
    report = build_report(s, out_dir=tmp_path / "rep")
    assert not (tmp_path / "rep" / "agreement.json").exists() and 'id="agreement"' not in report.index_path.read_text()


# --------------------------------------------------------------------------- robust aggregates
def ref_iqm(values: list[float]) -> float:
    v = sorted(values)
    cut = int(0.25 * len(v))
    kept = v[cut:len(v) - cut]
    return math.fsum(kept) / len(kept)


def ref_poi(x: np.ndarray, y: np.ndarray) -> float:
    per_task = []
    for t in range(x.shape[1]):
        wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a in x[:, t] for b in y[:, t]]
        per_task.append(math.fsum(wins) / len(wins))
    return math.fsum(per_task) / len(per_task)


def ref_quantiles(boot: list[float], ci: float = DEFAULT_CI) -> tuple[float, float]:
    b = np.array(boot, dtype=np.float64)
    return tuple(np.quantile(b, [(1 - ci) / 2, 1 - (1 - ci) / 2]))  # type: ignore[return-value]


def ref_iqm_ci(s: np.ndarray, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> tuple[float, float, float]:
    """Loops: per resample, per image, the seeds drawn with replacement (the same draws)."""
    runs, tasks = s.shape
    idx = np.random.default_rng(seed).integers(0, runs, size=(n_boot, runs, tasks))
    boot = [ref_iqm([s[idx[b, i, t], t] for i in range(runs) for t in range(tasks)]) for b in range(n_boot)]
    return (ref_iqm(list(s.ravel())), *ref_quantiles(boot))


def ref_poi_ci(x: np.ndarray, y: np.ndarray, n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> tuple:
    rng = np.random.default_rng(seed)
    ix = rng.integers(0, x.shape[0], size=(n_boot, *x.shape))
    iy = rng.integers(0, y.shape[0], size=(n_boot, *y.shape))
    cols = np.arange(x.shape[1])
    boot = [ref_poi(x[ix[b], cols], y[iy[b], cols]) for b in range(n_boot)]
    return (ref_poi(x, y), *ref_quantiles(boot))


def matrix(row: Row) -> np.ndarray:
    seeds = [s for s in row.seeds if s not in row.diverged]
    return np.array([[row.value(s, img) for img in IMAGES] for s in seeds], dtype=np.float64)


def test_robust_columns_match_a_float64_reference(study: Path) -> None:
    n_boot = 300  # the loops below are slow; the vectorised code is the same for any n_boot
    df = ablation_table(study, robust=True, n_boot=n_boot)
    base = matrix(ROWS[0])
    for i, row in enumerate(ROWS):
        line = df[df["row"] == row.label].iloc[0]
        if row.label == "gone":
            assert math.isnan(line[f"{OBJECTIVE}:iqm"]) and math.isnan(line[f"{OBJECTIVE}:poi"])
            continue
        m = matrix(row)
        assert line[f"{OBJECTIVE}:iqm"] == pytest.approx(scipy.stats.trim_mean(m, 0.25, axis=None), abs=1e-12)
        want = ref_iqm_ci(m, n_boot)
        got = tuple(line[f"{OBJECTIVE}:{f}"] for f in ("iqm", "iqm_low", "iqm_high"))
        assert got == pytest.approx(want, abs=1e-12)
        if i == 0:
            assert math.isnan(line[f"{OBJECTIVE}:poi"])  # the baseline row against itself: not given
            continue
        want = ref_poi_ci(m, base, n_boot)
        got = tuple(line[f"{OBJECTIVE}:{f}"] for f in ("poi", "poi_low", "poi_high"))
        assert got == pytest.approx(want, abs=1e-12)
    gain = df[df["row"] == "gain"].iloc[0]
    assert gain[f"{OBJECTIVE}:poi"] > 0.95  # +0.5 dB on every image, noise 0.05: near-certain wins
    assert ablation_table(study).filter(like=":iqm").empty  # opt-in: absent by default


def test_one_seed_gives_no_interval() -> None:
    s = np.arange(12, dtype=float).reshape(1, 12)
    est = iqm_ci(s)
    assert est.value == ref_iqm(list(s.ravel())) and math.isnan(est.low)
    assert math.isnan(poi_ci(s, s - 1).low) and poi_ci(s, s - 1).value == 1.0


def test_robust_columns_are_rendered_when_asked(study: Path, tmp_path: Path) -> None:
    assert main(["report", str(study), "--out", str(tmp_path / "plain")]) == 0
    assert "IQM" not in (tmp_path / "plain" / "tables" / "ablation.md").read_text()
    assert main(["report", str(study), "--out", str(tmp_path / "rob"), "--robust"]) == 0
    md = (tmp_path / "rob" / "tables" / "ablation.md").read_text()
    assert "PSNR-Y IQM" in md and "PSNR-Y P(&gt; base)" in md and "interquartile mean" in md
    tex = (tmp_path / "rob" / "tables" / "ablation.tex").read_text()
    lines = [ln for ln in tex.split("\\midrule")[1].split("\\bottomrule")[0].strip().splitlines()]
    assert len({ln.count(" & ") for ln in lines}) == 1  # every row has the new cells


def test_robust_matches_rliable(monkeypatch: pytest.MonkeyPatch) -> None:
    """rliable's own metrics and stratified bootstrap (skipped where rliable is not installed)."""
    library = pytest.importorskip("rliable.library")
    metrics = pytest.importorskip("rliable.metrics")
    import inspect

    from arch.bootstrap import IIDBootstrap

    if "seed" in inspect.signature(IIDBootstrap.__init__).parameters:
        # rliable 1.2 passes random_state=, which arch 8 renamed seed= (arch 7 does not import
        # with pandas 3); rliable draws its indices from numpy's global generator either way
        init = IIDBootstrap.__init__

        def shim(self: IIDBootstrap, *args: np.ndarray, random_state: object = None, **kw: np.ndarray) -> None:
            kw.setdefault("seed", random_state)  # type: ignore[arg-type]
            init(self, *args, **kw)

        monkeypatch.setattr(IIDBootstrap, "__init__", shim)
    x, y = matrix(ROWS[1]), matrix(ROWS[0])
    x = np.vstack([x, x + np.random.default_rng(9).normal(0, 0.3, size=x.shape)])  # 6 runs: a wider CI
    assert float(metrics.aggregate_iqm(x)) == pytest.approx(iqm_ci(x).value, abs=1e-12)
    assert float(metrics.probability_of_improvement(x, y)) == pytest.approx(poi_ci(x, y).value, abs=1e-12)
    np.random.seed(0)  # rliable draws from numpy's global generator
    # rliable's P(improvement) runs scipy's Mann-Whitney per image per resample: 500 resamples
    _, iqm_iv = library.get_interval_estimates({"x": x}, lambda s: np.array([metrics.aggregate_iqm(s)]), reps=5000)
    _, poi_iv = library.get_interval_estimates({"xy": [x, y]}, lambda a, b: np.array(
        [metrics.probability_of_improvement(a, b)]), reps=500)
    ours_iqm, ours_poi = iqm_ci(x, n_boot=5000), poi_ci(x, y, n_boot=5000)
    for ours, theirs, tol in ((ours_iqm, iqm_iv["x"], 0.05), (ours_poi, poi_iv["xy"], 0.1)):
        width = theirs[1, 0] - theirs[0, 0]
        assert width > 0
        # different random draws: the same interval up to Monte Carlo error
        assert ours.low == pytest.approx(theirs[0, 0], abs=tol * width)
        assert ours.high == pytest.approx(theirs[1, 0], abs=tol * width)
