"""Real local Optuna studies with seed groups, logging more often than evaluating (as users do):
reports without the objective, collapse before the first evaluation, several objectives,
and a driver killed mid-study."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml

from resweep.study.layout import StudyLayout, read_parquet
from resweep.study.optuna_search import INTERRUPTED_ATTR
from resweep.study.results import LOST_TRIAL_ERROR
from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict
from kill_resume import ENDED, kill_driver_when, resume

pytestmark = pytest.mark.ray

OBJECTIVE = "eval.demo-eval.psnr_y"
TINY_LOSS = 1e-6  # every loss is above it: collapse at the first step, before any evaluation


def _optuna_trials(study_dir: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{study_dir / 'optuna.db'}").trials


def _last_values(curves, trial_id: str, metric: str) -> float | None:
    rows = curves[(curves.trial_id == trial_id)].dropna(subset=[metric]) if metric in curves else []
    return None if len(rows) == 0 else float(rows.sort_values("iteration").iloc[-1][metric])


def _check_groups_against_optuna(study_dir: Path, name: str, seeds: list[int], metrics: list[str]):
    """Every Optuna trial stands for one complete seed group and was told by the rule."""
    import optuna

    layout = StudyLayout(study_dir)
    trials = read_parquet(layout.trials).to_pandas().set_index("trial_id")
    # a trial that started just before a kill and that Tune had not recorded: errored as lost,
    # its configuration drawn again (see StudyResults.mark_lost); at most one per kill
    lost = trials["error"].fillna("") == LOST_TRIAL_ERROR
    assert lost.sum() <= 1 and (trials.loc[lost, "status"] == "errored").all()
    trials = trials[~lost]
    curves = read_parquet(layout.curves).to_pandas()
    stored = _optuna_trials(study_dir, name)
    # an ask lost with a killed driver: never ran, told FAIL on resume (at most one per kill)
    interrupted = [ot for ot in stored if INTERRUPTED_ATTR in ot.user_attrs]
    assert len(interrupted) <= 1
    assert all(ot.state == optuna.trial.TrialState.FAIL and "ray_trial_ids" not in ot.user_attrs
               for ot in interrupted)
    stored = [ot for ot in stored if INTERRUPTED_ATTR not in ot.user_attrs]
    assert len(stored) == trials["group"].nunique()
    states = {}
    for ot in stored:
        ids = ot.user_attrs["ray_trial_ids"]
        group = trials.loc[ids]
        assert sorted(group["seed"]) == sorted(seeds), "each seed runs exactly once per configuration"
        assert group["group"].nunique() == 1
        for path, value in ot.params.items():
            assert (group[f"param.{path}"] == value).all()
        statuses = set(group["status"])
        if statuses & {"diverged", "errored"}:
            expected = optuna.trial.TrialState.FAIL
        elif "pruned" in statuses:
            expected = optuna.trial.TrialState.PRUNED
        else:
            expected = optuna.trial.TrialState.COMPLETE
            means = [sum(_last_values(curves, t, m) for t in ids) / len(ids) for m in metrics]
            assert ot.values == pytest.approx(means)
        assert ot.state == expected, (ot.number, statuses, ot.state)
        states[ot.number] = (ot.state, ot.params)
    return trials, states


@pytest.mark.parametrize("seeds", [pytest.param([0], marks=pytest.mark.slow), [0, 1]], ids=["one-seed", "two-seeds"])
def test_tpe_survives_loss_only_reports_and_fails_configs_that_collapse_before_evaluating(
    ray_local, tmp_path, seeds
):
    import optuna

    from resweep.study import run_study

    name = f"tpe-collapse-{len(seeds)}"
    study = study_from_dict(
        {
            "name": name,
            # log every 2 iterations, evaluate every 4: half the reports carry no objective
            "base": tiny_config_dict(**{"train.iterations": 8, "train.log_every": 2, "eval.every": 4}),
            "space": {
                "train.divergence.max_abs_loss": {"type": "choice", "values": [TINY_LOSS, 1e6]},
                "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
            },
            "seeds": seeds,
            # sampler seed 0: the two random start-up draws are one collapsing and one sound config
            "search": {"algorithm": "optuna_tpe", "num_samples": 3, "seed": 0, "optuna_storage": "sqlite"},
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
            "budget": {"max_concurrent": 2},
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    trials, states = _check_groups_against_optuna(study_dir, name, seeds, [OBJECTIVE])
    assert len(trials) == 3 * len(seeds)
    collapsing = [s for s, p in states.values() if p["train.divergence.max_abs_loss"] == TINY_LOSS]
    sound = [s for s, p in states.values() if p["train.divergence.max_abs_loss"] != TINY_LOSS]
    assert collapsing and sound
    assert all(s == optuna.trial.TrialState.FAIL for s in collapsing)
    assert all(s == optuna.trial.TrialState.COMPLETE for s in sound)
    # the collapsing trials diverged before their first evaluation
    diverged = trials[trials["config.train.divergence.max_abs_loss"] == TINY_LOSS]
    assert (diverged["status"] == "diverged").all()
    assert diverged[f"final.{OBJECTIVE}"].isna().all() if f"final.{OBJECTIVE}" in diverged else True
    # each trial's log file holds the engine's lines
    layout = StudyLayout(study_dir)
    for trial_id, row in trials.iterrows():
        log = layout.trial_log(trial_id).read_text()
        assert "training edsr_tiny" in log
        assert ("loss diverged at iteration 1" in log) == (row["status"] == "diverged")
        if row["status"] == "finished":
            assert "it 2/8 |" in log and "it 8/8 |" in log


def test_optuna_multi_with_two_seeds_tells_one_mean_per_objective(ray_local, tmp_path):
    import optuna

    from resweep.study import run_study

    name = "multi-seeds"
    metrics = [OBJECTIVE, "loss.total"]
    study = study_from_dict(
        {
            "name": name,
            "base": tiny_config_dict(**{"train.iterations": 6, "train.log_every": 2, "eval.every": 3}),
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
            "seeds": [0, 1],
            "search": {"algorithm": "optuna_multi", "num_samples": 2, "seed": 1, "optuna_storage": "sqlite"},
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}, {"metric": "loss.total", "mode": "min"}],
            "budget": {"max_concurrent": 2},
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    trials, states = _check_groups_against_optuna(study_dir, name, [0, 1], metrics)
    assert len(trials) == 4 and (trials["status"] == "finished").all()
    stored = _optuna_trials(study_dir, name)
    assert len(stored) == 2
    assert all(t.state == optuna.trial.TrialState.COMPLETE and len(t.values) == 2 for t in stored)
    # the two seeds of a configuration really differ (a mean of one value twice would hide a bug)
    for t in stored:
        psnrs = [trials.loc[i, f"final.{OBJECTIVE}"] for i in t.user_attrs["ray_trial_ids"]]
        assert not math.isclose(psnrs[0], psnrs[1], rel_tol=0, abs_tol=1e-9)


@pytest.mark.slow
def test_killed_driver_resumes_an_optuna_study_keeping_seed_groups(tmp_path):
    """A kill may land between Optuna's ask and Tune's searcher checkpoint (then that Optuna
    trial is told FAIL on resume, marked interrupted; tests/test_study_search_resume.py makes
    that window deterministic) or elsewhere: either way 4 whole seed groups, none run twice."""
    import optuna

    name = "seed-resume"
    base = tiny_config_dict(**{"train.iterations": 24, "train.log_every": 4, "eval.every": 8})
    study_file = tmp_path / "study.yaml"
    study_file.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "base": base,
                "space": {
                    "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
                    "train.divergence.max_abs_loss": {"type": "choice", "values": [TINY_LOSS, 1e6]},
                },
                "seeds": [0, 1],
                "search": {"algorithm": "optuna_tpe", "num_samples": 4, "seed": 0, "optuna_storage": "sqlite"},
                "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
                "budget": {"max_concurrent": 2},
            }
        )
    )
    study_dir = tmp_path / "study"
    rows = kill_driver_when(study_file, study_dir, lambda rows: sum(r["status"] in ENDED for r in rows) >= 3)
    before = {t: r for t, r in rows.items() if r["status"] in ENDED}
    resume(study_dir)
    trials, states = _check_groups_against_optuna(study_dir, name, [0, 1], [OBJECTIVE])
    assert len(trials) == 8, "4 configurations x 2 seeds, none run twice"
    assert trials.groupby(["group", "seed"]).size().max() == 1
    assert len(states) == 4
    assert all(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL) for s, _ in states.values())
    for trial_id, row in before.items():  # ended before the kill: kept, not rerun
        assert trials.loc[trial_id, "started_at"] == row["started_at"]
        assert trials.loc[trial_id, "status"] == row["status"]
