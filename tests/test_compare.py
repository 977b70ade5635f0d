"""``resweep compare``: rows matched across studies, Δ between studies with paired CIs checked
against a plain computation, the best row per study, the report's files and escaping."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from resweep.analysis.compare import compare_studies
from resweep.analysis.stats import DEFAULT_CI, DEFAULT_N_BOOT, DEFAULT_SEED
from resweep.cli import main
from tests.synthetic_studies import IMAGES, OBJECTIVE, Row, image_offsets, write_study

KNOB = "methods.spn.alpha"
EVIL = "</script><b>x</b>&"
OFF = image_offsets()


def value(study: int, alpha: float, s: int, img: str) -> float:
    noise = np.random.default_rng([study, int(alpha * 10), s, IMAGES.index(img)]).normal(0, 0.1)
    return 30 + OFF[img] + alpha + 0.2 * study * alpha + 0.02 * s + float(noise)


def rows(study: int, alphas: list[float], seeds: tuple[int, ...] = (0, 1, 2), extra: dict | None = None) -> list[Row]:
    return [Row("", lambda s, img, a=a: value(study, a, s, img), {KNOB: a, **(extra or {})}, seeds=seeds)
            for a in alphas]


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("cmp")
    a = write_study(root / "a", rows(0, [0.0, 0.5, 1.0]), name="demo", knobs=[KNOB])
    # the same file run again with a larger grid: same name, so the folders name the studies
    b = write_study(root / "b", rows(1, [0.0, 0.5, 1.0, 2.0]), name="demo", knobs=[KNOB])
    # other seeds (nothing pairs with the first study) and a second, constant knob
    c = write_study(root / "c", rows(2, [0.5, 1.0], seeds=(7, 8), extra={"train.lr": 1e-3}), name=EVIL,
                    knobs=[KNOB, "train.lr"])
    return a, b, c


def ref_ci(diffs: list[float], n_boot: int = DEFAULT_N_BOOT, seed: int = DEFAULT_SEED) -> tuple[float, float, float]:
    d = np.array(diffs, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    means = [math.fsum(d[i]) / len(d) for i in idx]
    low, high = np.quantile(means, [(1 - DEFAULT_CI) / 2, 1 - (1 - DEFAULT_CI) / 2])
    return math.fsum(d) / len(d), float(low), float(high)


def test_rows_matched_and_delta_between_studies(studies: tuple[Path, Path, Path]) -> None:
    a, b, c = studies
    cmp = compare_studies([a, b, c])
    assert cmp.studies == ["a", "b", "c"]
    t = cmp.table
    assert list(t["row"]) == ["alpha=0", "alpha=0.5", "alpha=1", "alpha=2"]
    assert list(t["s1:row"]) == ["alpha=0", "alpha=0.5", "alpha=1", "alpha=2"]
    assert list(t["s0:row"]) == ["alpha=0", "alpha=0.5", "alpha=1", ""]
    # c has a second (constant) knob, so its configurations differ: matched by row name
    assert list(t["s2:row"]) == ["", "alpha=0.5", "alpha=1", ""]
    k = OBJECTIVE
    for line, alpha in enumerate([0.0, 0.5, 1.0]):
        diffs = [value(1, alpha, s, img) - value(0, alpha, s, img) for s in (0, 1, 2) for img in IMAGES]
        want = ref_ci(diffs)
        got = (t.at[line, f"{k}@1-0:diff"], t.at[line, f"{k}@1-0:low"], t.at[line, f"{k}@1-0:high"])
        assert got == pytest.approx(want, abs=1e-12)
        assert t.at[line, f"{k}@1-0:pairs"] == 3 * len(IMAGES)
        assert bool(t.at[line, f"{k}@1-0:sig"]) == (want[1] > 0 or want[2] < 0)
        means = [np.mean([np.mean([value(st, alpha, s, img) for img in IMAGES]) for s in (0, 1, 2)]) for st in (0, 1)]
        assert t.at[line, f"{k}@0:mean"] == pytest.approx(means[0]) and t.at[line, f"{k}@1:mean"] == pytest.approx(means[1])
    assert bool(t.at[2, f"{k}@1-0:sig"])  # +0.2 dB at alpha=1, noise 0.1 over 36 pairs
    assert bool(t.at[2, f"{k}@0:sig"]) and not bool(t.at[0, f"{k}@0:sig"])  # each study's own Δ mark
    assert math.isnan(t.at[3, f"{k}@1-0:diff"])  # alpha=2 only in b
    # c: no common seed with a: Δ of the cell means, no interval, never marked
    assert t.at[1, f"{k}@2-0:pairs"] == 0 and math.isnan(t.at[1, f"{k}@2-0:low"])
    assert t.at[1, f"{k}@2-0:diff"] == pytest.approx(t.at[1, f"{k}@2:mean"] - t.at[1, f"{k}@0:mean"])
    assert not t[f"{k}@2-0:sig"].any()
    best = cmp.best.set_index("study")
    assert best.loc["a", "row"] == "alpha=1" and best.loc["b", "row"] == "alpha=2" and best.loc["c", "row"] == "alpha=1"
    assert "train.lr=0.001" in best.loc["c", "configuration"]


def test_compare_command_writes_the_report(studies: tuple[Path, Path, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    a, b, c = studies
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), str(c), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "Compare: a vs b vs " in printed and "Best configuration per study:" in printed
    assert printed.startswith((out / "compare.txt").read_text())
    for rel in ("index.html", "tables/compare.md", "tables/compare.html", "tables/compare.csv", "tables/best.csv"):
        assert (out / rel).is_file(), rel
    page = (out / "index.html").read_text()
    assert 'id="fig-compare-delta"' in page and 'id="fig-compare-means"' in page
    # distinct study names label the studies; a name is user text: escaped everywhere
    assert main(["compare", str(a), str(c), "--out", str(tmp_path / "evil")]) == 0
    assert f"Compare: demo vs {EVIL}" in capsys.readouterr().out
    for rel in ("index.html", "tables/compare.html", "tables/compare.md"):
        text = (tmp_path / "evil" / rel).read_text()
        assert "<b>x</b>" not in text and "</script><b>" not in text
        assert "&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;&amp;" in text


def test_compare_refuses_one_study_and_unknown_metric(studies: tuple[Path, Path, Path], tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    a, b, _ = studies
    assert main(["compare", str(a), "--out", str(tmp_path / "x")]) == 2
    assert "at least two studies" in capsys.readouterr().err
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "y"), "--metric", "lpips"]) == 2
    assert "lpips" in capsys.readouterr().err
