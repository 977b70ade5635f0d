"""`resweep extend` (more seeds, more Optuna trials) and `warm_start` on real local Ray studies:
finished trials are never rerun, new ones land in the same tables, Optuna's storage grows by
exactly what was asked, and a warm start tells Optuna / reuses what an earlier study found."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resweep.study.layout import StudyLayout, read_parquet
from resweep.study.results import read_trials
from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict

pytestmark = pytest.mark.ray

OBJECTIVE = "eval.demo-eval.psnr_y"
BASE = {"train.iterations": 4, "train.log_every": 2, "eval.every": 4}


def _grid(name: str, lrs: list[float], seeds: list[int], **extra) -> dict:
    return {
        "name": name, "base": tiny_config_dict(**BASE), "seeds": seeds,
        "space": {"optim.lr": {"type": "grid", "values": lrs}},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "budget": {"max_concurrent": 2}, **extra,
    }


def _optuna_trials(study_dir: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}").trials


def _last_value(curves, trial_id: str) -> float:
    rows = curves[curves.trial_id == trial_id].dropna(subset=[OBJECTIVE]).sort_values("iteration")
    return float(rows.iloc[-1][OBJECTIVE])


def _unchanged(before: dict[str, dict], after: list[dict]) -> None:
    """Every trial of ``before`` is still there with the same row: it was not run again."""
    now = {r["trial_id"]: r for r in after}
    for trial_id, row in before.items():
        for key in ("status", "seed", "group", "started_at", "ended_at", f"final.{OBJECTIVE}"):
            assert now[trial_id].get(key) == row.get(key), (trial_id, key)


@pytest.fixture(scope="module")
def finished_grid(ray_local, tmp_path_factory) -> Path:
    """A finished grid study (two learning rates, seeds 0 and 1), the source of warm starts."""
    from resweep.study import run_study

    folder = tmp_path_factory.mktemp("earlier") / "grid"
    return run_study(study_from_dict(_grid("earlier", [1e-3, 3e-4], [0, 1])), study_dir=folder, quiet=True)


@pytest.mark.slow
def test_extend_a_finished_grid_study_by_a_seed_runs_only_the_new_trials(ray_local, tmp_path):
    from resweep.analysis.tables import ablation_table
    from resweep.study import extend_study, run_study

    folder = run_study(study_from_dict(_grid("ext-grid", [1e-3, 3e-4], [0])), study_dir=tmp_path / "s", quiet=True)
    before = {r["trial_id"]: r for r in read_trials(folder)}
    n_before = ablation_table(folder, metric="psnr_y")[f"{OBJECTIVE}:n"].tolist()
    assert len(before) == 2 and n_before[:2] == [1, 1]

    extend_study(folder, seeds=[3], quiet=True)
    after = read_trials(folder)
    _unchanged(before, after)
    new = [r for r in after if r["trial_id"] not in before]
    assert len(new) == 2 and {r["seed"] for r in new} == {3}
    assert all(r["status"] == "finished" for r in new)
    # the same configurations (seed groups) on the new seed
    assert sorted(r["group"] for r in new) == sorted(r["group"] for r in before.values())
    table = ablation_table(folder, metric="psnr_y")
    assert table[f"{OBJECTIVE}:n"].tolist()[:2] == [2, 2]
    meta = json.loads((folder / "study.json").read_text())
    assert [e["tune_dir"] for e in meta["experiments"]] == ["tune", "tune-ext1"]
    assert meta["extensions"][0]["seeds"] == [3] and meta["seeds"] == [0, 3]
    assert any("extended" in n for n in table.attrs["notes"])
    # nothing left to add: a second call runs nothing and changes no row
    extend_study(folder, quiet=True)
    assert len(read_trials(folder)) == 4

    # an extension whose driver died after writing study.yaml and study.json, before Ray Tune
    # saved anything: `resweep resume` runs what the study still lacks, and nothing else
    import yaml

    from resweep.study import resume_study

    data = yaml.safe_load((folder / "study.yaml").read_text())
    (folder / "study.yaml").write_text(yaml.safe_dump({**data, "seeds": [0, 3, 4]}))
    meta["experiments"].append({"tune_dir": "tune-ext2", "searcher": False})
    (folder / "study.json").write_text(json.dumps(meta))
    before = {r["trial_id"]: r for r in read_trials(folder)}
    resume_study(folder, quiet=True)
    after = read_trials(folder)
    _unchanged(before, after)
    assert sorted(r["seed"] for r in after if r["trial_id"] not in before) == [4, 4]
    meta = json.loads((folder / "study.json").read_text())
    assert [e["tune_dir"] for e in meta["experiments"]] == ["tune", "tune-ext1", "tune-ext2"]


@pytest.mark.slow
def test_extend_an_optuna_study_by_a_seed_then_by_trials(ray_local, tmp_path):
    import optuna

    from resweep.study import extend_study, run_study

    name = "ext-tpe"
    study = study_from_dict({
        "name": name, "base": tiny_config_dict(**BASE), "seeds": [0],
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
        "search": {"algorithm": "optuna_tpe", "num_samples": 2, "seed": 0, "optuna_storage": "sqlite"},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "budget": {"max_concurrent": 1},
    })
    folder = run_study(study, study_dir=tmp_path / "s", quiet=True)
    stored = _optuna_trials(folder, name)
    before = {r["trial_id"]: r for r in read_trials(folder)}
    assert len(stored) == 2 and len(before) == 2

    # a new seed: the finished configurations run on it; Optuna is not told again
    extend_study(folder, seeds=[1], quiet=True)
    rows = read_trials(folder)
    _unchanged(before, rows)
    seed1 = [r for r in rows if r["seed"] == 1]
    assert sorted(r["group"] for r in seed1) == sorted(r["group"] for r in before.values())
    assert [(t.number, t.params, t.values) for t in _optuna_trials(folder, name)] == \
        [(t.number, t.params, t.values) for t in stored]

    # one more trial: the restored searcher asks Optuna once more, on both seeds
    before = {r["trial_id"]: r for r in rows}
    extend_study(folder, trials=1, quiet=True)
    rows = read_trials(folder)
    _unchanged(before, rows)
    now = _optuna_trials(folder, name)
    assert len(now) == 3
    assert [(t.number, t.params, t.values) for t in now[:2]] == [(t.number, t.params, t.values) for t in stored]
    curves = read_parquet(StudyLayout(folder).curves).to_pandas()
    for t in now[2:]:
        assert t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs["seeds"] == [0, 1]
        ids = t.user_attrs["ray_trial_ids"]
        assert not set(ids) & set(before)
        assert t.values[0] == pytest.approx(sum(_last_value(curves, i) for i in ids) / 2)
    assert len(rows) == 6 and len({r["trial_id"] for r in rows}) == 6
    assert {r["group"] for r in rows} == {"g0000", "g0001", "g0002"}
    study_yaml = (folder / "study.yaml").read_text()
    assert "num_samples: 3" in study_yaml


@pytest.mark.slow
def test_warm_started_tpe_knows_the_earlier_results_before_its_first_ask(finished_grid, tmp_path):
    import optuna

    from resweep.study import run_study
    from resweep.study.runner import _prepare_dir
    from resweep.study.tuner import searcher_and_space
    from resweep.study.warm_start import WARM_ATTR, apply_warm_start

    def tpe(name: str, low: float) -> dict:
        return {
            "name": name, "base": tiny_config_dict(**BASE), "seeds": [0],
            "space": {"optim.lr": {"type": "loguniform", "low": low, "high": 2e-3}},
            "search": {"algorithm": "optuna_tpe", "num_samples": 1, "seed": 0, "optuna_storage": "sqlite"},
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "warm_start": [str(finished_grid)],
        }

    earlier = read_trials(finished_grid)
    curves = read_parquet(StudyLayout(finished_grid).curves).to_pandas()
    expected = {}  # lr -> mean over the earlier study's two seeds of the last reported objective
    for lr in (1e-3, 3e-4):
        ids = [r["trial_id"] for r in earlier if r["param.optim.lr"] == lr]
        expected[lr] = sum(_last_value(curves, i) for i in ids) / len(ids)

    # the searcher a study starts with, before any ask: both earlier configurations lie inside
    study = study_from_dict(tpe("warm", 1e-4))
    layout = StudyLayout(tmp_path / "probe")
    _prepare_dir(study, layout, None)
    searcher = apply_warm_start(study, layout, searcher_and_space(study, layout))[0]
    known = searcher.searcher._ot_study.trials
    assert {t.params["optim.lr"]: t.values[0] for t in known} == pytest.approx(expected)
    assert all(t.state == optuna.trial.TrialState.COMPLETE and t.user_attrs[WARM_ATTR] == str(finished_grid)
               for t in known)
    # a narrower space: 3e-4 lies outside it and is not told
    narrow = study_from_dict(tpe("narrow", 5e-4))
    layout = StudyLayout(tmp_path / "narrow")
    _prepare_dir(narrow, layout, None)
    known = apply_warm_start(narrow, layout, searcher_and_space(narrow, layout))[0].searcher._ot_study.trials
    assert [t.params["optim.lr"] for t in known] == [1e-3]

    # a real run: Optuna's study holds the two told results, then the one it drew and ran
    folder = run_study(study_from_dict(tpe("warm-run", 1e-4)), study_dir=tmp_path / "run", quiet=True)
    stored = _optuna_trials(folder, "warm-run")
    assert [WARM_ATTR in t.user_attrs for t in stored] == [True, True, False]
    assert stored[2].user_attrs["ray_trial_ids"] == [r["trial_id"] for r in read_trials(folder)]


@pytest.mark.slow
def test_grid_warm_start_reuses_a_finished_configuration(finished_grid, tmp_path):
    from resweep.analysis.tables import ablation_table
    from resweep.study import run_study
    from resweep.study.warm_start import load_source, reuse_finished

    earlier = {(r["param.optim.lr"], r["seed"]): r for r in read_trials(finished_grid)}
    study = study_from_dict(_grid("reuse", [1e-3, 5e-4], [0], warm_start=[str(finished_grid)]))
    folder = run_study(study, study_dir=tmp_path / "s", quiet=True)
    rows = {r["param.optim.lr"]: r for r in read_trials(folder)}
    assert len(rows) == 2
    reused, ran = rows[1e-3], rows[5e-4]
    assert reused["reused_from"] == str(finished_grid) and ran.get("reused_from") is None
    source = earlier[(1e-3, 0)]
    assert reused["trial_id"] == source["trial_id"]
    assert reused[f"final.{OBJECTIVE}"] == source[f"final.{OBJECTIVE}"]
    assert reused["started_at"] == source["started_at"]  # the earlier run, not a new one
    assert ran["trial_id"] not in {r["trial_id"] for r in earlier.values()}
    curves = read_parquet(StudyLayout(folder).curves, trial_ids={reused["trial_id"]})
    assert curves.num_rows > 0
    notes = ablation_table(folder, metric="psnr_y").attrs["notes"]
    assert any(f"1 trial(s) reused from {finished_grid}" in n for n in notes)

    # what "compatible" refuses: another training length, another code identity
    longer = study_from_dict(_grid("longer", [1e-3], [0], warm_start=[str(finished_grid)],
                                   base=tiny_config_dict(**{**BASE, "train.iterations": 6})))
    remaining, counts = reuse_finished(longer, StudyLayout(tmp_path / "longer"),
                                       [load_source(str(finished_grid), 0, longer)])
    assert len(remaining) == 1 and counts == {}
    meta_path = finished_grid / "study.json"
    meta = json.loads(meta_path.read_text())
    try:
        meta_path.write_text(json.dumps({**meta, "identity": {**meta["identity"], "code": {"resweep": "0"}}}))
        assert "code" in (load_source(str(finished_grid), 0, study).incompatible or "")
    finally:
        meta_path.write_text(json.dumps(meta))
