"""Real local studies on Ray Tune: Optuna TPE + ASHA, divergence, Parquet schema, kill + resume."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest
import yaml

from resweep.study.results import LOST_TRIAL_ERROR
from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict
from kill_resume import kill_driver_when, resume

pytestmark = pytest.mark.ray

OBJECTIVE = "eval.demo-eval.psnr_y"


def test_optuna_tpe_asha_study_writes_the_documented_files(ray_local, tmp_path):
    from resweep.study import run_study

    study = study_from_dict(
        {
            "name": "tpe-asha",
            "base": tiny_config_dict(**{"train.iterations": 8, "eval.every": 4, "train.log_every": 4}),
            "space": {
                "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
                "loss.pixel": {"type": "choice", "values": ["l1", "l2"]},
            },
            "seeds": [0],
            "search": {"algorithm": "optuna_tpe", "num_samples": 6, "seed": 3, "optuna_storage": "sqlite"},
            "scheduler": {"kind": "asha", "grace_period": 4, "reduction_factor": 2},
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
            "budget": {"max_concurrent": 2},
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)

    trials = pq.read_table(study_dir / "trials.parquet").to_pandas()
    assert len(trials) == 6
    assert set(trials["status"]) <= {"finished", "pruned"}
    assert (trials["status"] == "finished").any()
    for column in ("trial_id", "seed", "iterations", "time_total_s", "param.optim.lr", "param.loss.pixel",
                   "config.optim.lr", "config.model.name", f"final.{OBJECTIVE}", f"best.{OBJECTIVE}"):
        assert column in trials.columns, column
    # the knob columns hold what the trial actually trained with
    assert (trials["param.optim.lr"] == trials["config.optim.lr"]).all()
    assert trials["param.optim.lr"].between(1e-4, 3e-3).all()
    # pruned trials stopped at the grace period, finished ones ran the full schedule
    assert (trials.loc[trials.status == "finished", "iterations"] == 8).all()
    assert (trials.loc[trials.status == "pruned", "iterations"] < 8).all()

    curves = pq.read_table(study_dir / "curves.parquet").to_pandas()
    assert set(curves["trial_id"]) == set(trials["trial_id"])
    for tid, group in curves.groupby("trial_id"):
        assert group["iteration"].is_monotonic_increasing and group["iteration"].is_unique
        last = group.dropna(subset=[OBJECTIVE]).iloc[-1]
        assert trials.set_index("trial_id").loc[tid, f"final.{OBJECTIVE}"] == pytest.approx(last[OBJECTIVE])

    per_image = pq.read_table(study_dir / "per_image.parquet").to_pandas()
    assert {"trial_id", "iteration", "set", "image", "psnr_y", "psnr_y_baseline"} <= set(per_image.columns)
    assert set(per_image["image"]) == {"astronaut", "chelsea", "coffee"}
    # a trial's mean over images is what it reported
    some = per_image[per_image.iteration == 4].groupby("trial_id")["psnr_y"].mean()
    for tid, mean in some.items():
        row = curves[(curves.trial_id == tid) & (curves.iteration == 4)].iloc[0]
        assert mean == pytest.approx(row[OBJECTIVE])

    import optuna

    stored = optuna.load_study(study_name="tpe-asha", storage=f"sqlite:///{study_dir / 'optuna.db'}")
    assert len(stored.trials) == 6


def test_diverged_trial_is_recorded_and_failed_in_optuna(ray_local, tmp_path):
    from resweep.study import run_study

    study = study_from_dict(
        {
            "name": "collapse",
            "base": tiny_config_dict(**{"train.iterations": 6, "eval.every": 3, "schedule.kind": "constant"}),
            "variants": [
                {"label": "ok", "overrides": {}},
                {"label": "explode", "overrides": {"optim.name": "sgd", "optim.lr": 1.0e12}},
            ],
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    trials = pq.read_table(study_dir / "trials.parquet").to_pandas().set_index("label")
    assert trials.loc["ok", "status"] == "finished"
    assert trials.loc["explode", "status"] == "diverged"
    assert "diverged" in trials.loc["explode", "error"]


def test_divergence_aware_optuna_search_marks_failed():
    import optuna
    from ray import tune

    from resweep.study.optuna_search import DivergenceAwareOptunaSearch

    searcher = DivergenceAwareOptunaSearch(
        space={"x": tune.uniform(0, 1)}, metric="score", mode="max", sampler=optuna.samplers.RandomSampler(seed=0)
    )
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", {"score": 30.0, "diverged": 1, "status": "diverged"})
    searcher.on_trial_complete("b", {"score": 20.0, "diverged": 0, "status": "finished"})
    states = [t.state for t in searcher._ot_study.trials]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE]


def test_sigkilled_driver_resumes_without_losing_or_rerunning_trials(tmp_path):
    base = tiny_config_dict(**{"train.iterations": 24, "eval.every": 8, "train.log_every": 8})
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": "killme",
                "base": base,
                "space": {"optim.lr": {"type": "grid", "values": [1e-3, 5e-4, 2e-4, 1e-4, 5e-5]}},
                "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
                "budget": {"max_concurrent": 2},
            }
        )
    )
    study_dir = tmp_path / "study"
    # killed once 2 trials finished: with 2 running at a time, later trials are under way or
    # not made yet (Tune's grid generator makes those after the resume)
    before = kill_driver_when(study_file, study_dir, lambda rows: sum(r["status"] == "finished" for r in rows) >= 2)
    finished_before = {t for t, r in before.items() if r["status"] == "finished"}
    resume(study_dir)
    after = {r["trial_id"]: r for r in pq.read_table(study_dir / "trials.parquet").to_pylist()}
    # a trial that started after Tune's last experiment checkpoint (one of the 2 running) is
    # unknown to the resumed Tune: errored as lost, its grid point made again
    lost = {t for t, r in after.items() if r["error"] == LOST_TRIAL_ERROR}
    assert len(lost) <= 2 and all(after[t]["status"] == "errored" for t in lost)
    after = {t: r for t, r in after.items() if t not in lost}
    assert len(after) == 5
    assert all(r["status"] == "finished" for r in after.values()), {t: r["status"] for t, r in after.items()}
    assert len({r["param.optim.lr"] for r in after.values()}) == 5  # each grid point once
    for tid in finished_before:
        # kept as it was: not restarted (start time unchanged) and its results untouched
        assert after[tid]["started_at"] == before[tid]["started_at"]
        assert after[tid][f"final.{OBJECTIVE}"] == before[tid][f"final.{OBJECTIVE}"]
    curves = pq.read_table(study_dir / "curves.parquet").to_pandas()
    for tid, group in curves.groupby("trial_id"):
        assert group["iteration"].is_unique, f"trial {tid} has duplicated reports"
        assert list(group["iteration"]) == [8, 16, 24]


@pytest.mark.slow
def test_raising_trial_is_recorded_as_errored_and_the_study_goes_on(ray_local, tmp_path):
    import torch

    from resweep.study import run_study

    # a safe torch file (preflight passes it) of another network: loading it into the model
    # raises inside the trial, as a checkpoint of the wrong architecture would
    other = tmp_path / "other_network.pt"
    torch.save({"body.0.weight": torch.zeros(3, 3)}, other)
    study = study_from_dict(
        {
            "name": "errors",
            "base": tiny_config_dict(**{"train.iterations": 4, "eval.every": 4}),
            "variants": [
                {"label": "ok", "overrides": {}},
                {"label": "broken", "overrides": {"model.init_from": str(other)}},
            ],
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
            "failure": {"max_failures": 1},
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    trials = pq.read_table(study_dir / "trials.parquet").to_pandas().set_index("label")
    assert trials.loc["ok", "status"] == "finished"
    assert trials.loc["broken", "status"] == "errored"
    assert str(other) in trials.loc["broken", "error"] and "does not fit" in trials.loc["broken", "error"]
