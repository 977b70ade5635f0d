"""`resweep status` reads a study folder from disk (also one copied off a cluster)."""

from __future__ import annotations

import pytest
import yaml

from resweep.cli import main
from resweep.study.results import StudyResults
from resweep.study.spec import study_from_dict, study_to_yaml

from conftest import tiny_config_dict


def test_status_prints_counts_best_and_errors(tmp_path, capsys):
    study = study_from_dict(
        {
            "name": "st",
            "base": tiny_config_dict(),
            "space": {"optim.lr": {"type": "grid", "values": [1e-3, 1e-4, 1e-5]}},
            "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"}],
        }
    )
    (tmp_path / "study.yaml").write_text(study_to_yaml(study))
    results = StudyResults(tmp_path, meta={
        "name": "st", "knobs": ["optim.lr"], "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"}],
        "total_trials": 3,
    })
    results.write_meta()
    experiment = study.base.to_dict()
    for tid, lr, psnr in (("t1", 1e-3, 30.5), ("t2", 1e-4, 31.25)):
        results.trial_started(tid, "", 0, {"optim.lr": lr}, experiment)
        results.trial_result(tid, {"iteration": 8, "eval.demo-eval.psnr_y": psnr, "status": "finished"})
        results.trial_completed(tid, {"status": "finished"}, total_iterations=8)
    results.trial_started("t3", "", 0, {"optim.lr": 1e-5}, experiment)
    results.trial_errored("t3", "Traceback ...\nDataError: cannot read image /x/y.png")
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2/3 done" not in out  # errored trials count as done: 3 of 3
    assert "3/3 done (2 finished, 0 pruned, 0 diverged, 1 errored)" in out
    assert "best eval.demo-eval.psnr_y 31.25 (t2)" in out
    assert "cannot read image /x/y.png" in out
    # the table lists each trial with its knob value
    assert any("t2" in line and "0.0001" in line and "31.2500" in line for line in out.splitlines())
    assert yaml.safe_load((tmp_path / "study.yaml").read_text())["name"] == "st"


def test_status_of_a_non_study_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert "not a study folder" in capsys.readouterr().err


def test_a_trial_lost_with_the_driver_is_marked_errored_and_ended_trials_are_untouched(tmp_path):
    """The driver died after a trial started and before Tune's experiment checkpoint recorded
    it: the resumed Tune does not know the trial, so its row would say 'running' forever."""
    from resweep.study.results import LOST_TRIAL_ERROR, read_trials

    results = StudyResults(tmp_path, meta={"name": "lost"})
    experiment = study_from_dict({"name": "lost", "base": tiny_config_dict()}).base.to_dict()
    for tid in ("done", "known", "ghost"):
        results.trial_started(tid, "", 0, {}, experiment)
    results.trial_result("ghost", {"iteration": 4, "loss.total": 0.5})
    results.trial_completed("done", {"status": "finished"}, total_iterations=0)
    results.trial_started("gone-but-ended", "", 0, {}, experiment)
    results.trial_completed("gone-but-ended", {"status": "finished"}, total_iterations=0)

    assert results.mark_lost({"done", "known"}) == ["ghost"]
    rows = {r["trial_id"]: r for r in read_trials(tmp_path)}  # on disk at once
    assert rows["ghost"]["status"] == "errored" and rows["ghost"]["error"] == LOST_TRIAL_ERROR
    assert rows["ghost"]["iterations"] == 4  # what it reported is kept
    assert rows["known"]["status"] == "running"  # Tune still has it: it will continue
    assert rows["done"]["status"] == rows["gone-but-ended"]["status"] == "finished"
    assert results.mark_lost({"done", "known"}) == []  # errored has ended: once only


@pytest.mark.ray
def test_the_study_callback_marks_lost_trials_when_the_experiment_ends(ray_local, tmp_path):
    """The wiring: at the end of a (resumed) experiment the callback compares its rows with the
    trials Tune holds, as Tune passes them to on_experiment_end."""
    from types import SimpleNamespace

    from resweep.study.callback import StudyCallback
    from resweep.study.results import LOST_TRIAL_ERROR, read_trials

    results = StudyResults(tmp_path, meta={"name": "lost"})
    results.write_meta()
    experiment = study_from_dict({"name": "lost", "base": tiny_config_dict()}).base.to_dict()
    for tid in ("ghost", "known"):
        results.trial_started(tid, "", 0, {}, experiment)
    callback = StudyCallback(study_dir=tmp_path, name="lost", objective="eval.demo-eval.psnr_y", mode="max",
                             total_trials=2, quiet=True)
    callback.setup()
    callback.on_experiment_end(trials=[SimpleNamespace(trial_id="known")])
    rows = {r["trial_id"]: r for r in read_trials(tmp_path)}
    assert rows["ghost"]["error"] == LOST_TRIAL_ERROR and rows["known"]["status"] == "running"
