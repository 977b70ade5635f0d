"""Study files that would run blind are refused before Ray starts (exit code 2, one line naming
the field): no ``base``, and an objective, ``paper.metric`` or ``baseline`` that no
configuration of the study can report or match."""

from __future__ import annotations

import pytest
import yaml

from resweep.cli import main
from resweep.errors import ConfigError
from resweep.study.preflight import check_study_metrics, study_experiments
from resweep.study.spec import load_study, study_from_dict

from conftest import tiny_config_dict

OBJECTIVE = "eval.demo-eval.psnr_y"


def _study(**fields) -> dict:
    study = {
        "name": "blind",
        "base": tiny_config_dict(),
        "space": {"optim.lr": {"type": "grid", "values": [1e-3, 3e-4]}},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
    }
    study.update(fields)
    return study


def _run(tmp_path, capsys, study: dict) -> tuple[int, str]:
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(study))
    code = main(["run", str(path), "--dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists(), "nothing may be written for a refused study"
    return code, err


def _refusal(study: dict) -> ConfigError:
    config = study_from_dict(study)
    with pytest.raises(ConfigError) as info:
        check_study_metrics(config, study_experiments(config))
    return info.value


def test_a_study_file_without_base_is_refused(tmp_path, capsys):
    study = _study()
    del study["base"]
    code, err = _run(tmp_path, capsys, study)
    assert code == 2 and "'base'" in err and "base: {}" in err, err


def test_an_explicit_empty_base_studies_the_default_experiment(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_study(base={})))
    study = load_study(path)
    assert study.base.model.name == study_from_dict({"name": "x"}).base.model.name


def test_an_experiment_config_given_as_a_study_says_what_it_is(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, tiny_config_dict())
    assert code == 2 and "experiment config" in err and "resweep train" in err, err


def test_an_objective_on_an_evaluation_set_no_configuration_has_is_refused(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, _study(objectives=[{"metric": "eval.nosuchset.psnr_y", "mode": "max"}]))
    assert code == 2, err
    assert "objectives[0].metric" in err and "nosuchset" in err
    assert "demo-eval" in err and "psnr_y" in err  # names the sets and metrics it can report


@pytest.mark.parametrize("metric", ["eval.demo-eval.psnr_yy", "eval.demo-eval.niqe", "loss_total", "spn.negatives"])
def test_objectives_no_configuration_reports(metric):
    error = _refusal(_study(objectives=[{"metric": metric, "mode": "max"}]))
    assert error.field == "objectives[0].metric" and metric in error.message


@pytest.mark.parametrize("metric", [
    OBJECTIVE, "eval.demo-eval.ssim", "eval.demo-eval.psnr_y_baseline", "loss.total", "loss.pixel",
    "time_per_step",
])
def test_objectives_a_configuration_reports_are_accepted(metric):
    config = study_from_dict(_study(objectives=[{"metric": metric, "mode": "max"}]))
    check_study_metrics(config, study_experiments(config))


def test_an_evaluation_set_that_only_one_variant_has_is_enough():
    """'no configuration can report it': one variant adding the set makes the objective valid."""
    extra = [{"kind": "demo", "split": "eval"}, {"kind": "demo", "split": "train", "name": "held"}]
    study = _study(space={}, variants=[
        {"label": "a", "overrides": {}},
        {"label": "b", "overrides": {"eval.sets": extra}},
    ], objectives=[{"metric": "eval.held.psnr", "mode": "max"}])
    config = study_from_dict(study)
    check_study_metrics(config, study_experiments(config))


def test_niqe_objective_needs_a_set_that_computes_it():
    sets = [{"kind": "demo", "split": "eval", "niqe": True}]
    study = _study(base=tiny_config_dict(**{"eval.sets": sets}),
                   objectives=[{"metric": "eval.demo-eval.niqe", "mode": "min"}])
    config = study_from_dict(study)
    check_study_metrics(config, study_experiments(config))


def test_averages_are_reportable():
    sets = [{"kind": "demo", "split": "eval", "name": "A"}, {"kind": "demo", "split": "train", "name": "B"}]
    base = tiny_config_dict(**{"eval.sets": sets, "eval.averages": {"Avg": ["A", "B"]}})
    config = study_from_dict(_study(base=base, objectives=[{"metric": "eval.Avg.psnr_y", "mode": "max"}]))
    check_study_metrics(config, study_experiments(config))


def test_optuna_objective_is_checked_too():
    study = _study(space={"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}},
                   search={"algorithm": "optuna_tpe", "num_samples": 2},
                   objectives=[{"metric": "eval.Set5.psnr_y", "mode": "max"}])
    assert "Set5" in _refusal(study).message


def test_paper_metric_no_set_reports_is_refused(tmp_path, capsys):
    study = _study(paper={"table": "Table 1", "metric": "lpips", "values": {}})
    code, err = _run(tmp_path, capsys, study)
    assert code == 2 and "paper.metric" in err and "lpips" in err and "psnr_y" in err, err
    config = study_from_dict(_study(paper={"table": "Table 1", "metric": "psnr_y", "values": {}}))
    check_study_metrics(config, study_experiments(config))


@pytest.mark.parametrize("baseline, refused", [
    ("lr=0.001", False),          # knob=value with a grid value
    ("optim.lr=3e-4", False),
    ("lr=0.01", True),            # a value the grid does not have
    ("momentum=0.9", True),       # a knob the study does not vary
    ("vanilla", True),            # no such variant
])
def test_baseline_must_match_a_row(baseline, refused):
    study = _study(baseline=baseline)
    if refused:
        assert _refusal(study).field == "baseline"
    else:
        config = study_from_dict(study)
        check_study_metrics(config, study_experiments(config))


def test_baseline_variant_label_and_knob_left_at_the_base_value():
    study = _study(space={}, variants=[
        {"label": "plain", "overrides": {}},
        {"label": "l2", "overrides": {"loss.pixel": "l2"}},
    ])
    for baseline in ("plain", "l2", "loss.pixel=l1"):  # l1: the base's value, kept by 'plain'
        config = study_from_dict({**study, "baseline": baseline})
        check_study_metrics(config, study_experiments(config))
    assert "plain" in _refusal({**study, "baseline": "l3"}).message


@pytest.mark.parametrize("name", ["../outside", "a/b", "..", ".hidden", "-flag", "x" * 101, "with space"])
def test_study_names_that_would_leave_the_studies_folder_are_refused(tmp_path, capsys, name):
    code, err = _run(tmp_path, capsys, _study(name=name))
    assert code == 2 and "cannot name a study folder" in err, err


def test_ordinary_study_names_are_accepted():
    for name in ("spn-table8-lambda", "mae_table3.x2", "Study1"):
        assert study_from_dict(_study(name=name)).name == name


def test_fractional_gpus_with_several_ddp_workers_are_refused(tmp_path, capsys):
    code, err = _run(tmp_path, capsys, _study(resources={"workers": 2, "gpus_per_worker": 0.5}))
    assert code == 2 and "gpus_per_worker" in err and "NCCL" in err, err
    study_from_dict(_study(resources={"workers": 1, "gpus_per_worker": 0.25}))  # packing trials: fine
    study_from_dict(_study(resources={"workers": 2, "gpus_per_worker": 1}))


@pytest.mark.parametrize("resources, fits", [
    ({"workers": 1, "cpus_per_worker": 1}, True),
    ({"workers": 4, "cpus_per_worker": 1, "in_process": False}, False),  # 4 + the trial process's sliver > 4
    ({"workers": 3, "cpus_per_worker": 1, "in_process": False}, True),
    ({"workers": 1, "cpus_per_worker": 5}, False),  # no node has 5 CPUs
    ({"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1}, False),  # no GPU at all
])
def test_resources_a_fixed_cluster_can_never_give_are_refused(ray_local, resources, fits):
    """The session's local Ray has 4 CPUs and no GPU (conftest): a trial asking for more would
    wait for ever; on a fixed cluster it is refused, naming what was asked and what exists."""
    from resweep.study.tuner import check_trial_fits

    study = study_from_dict(_study(resources=resources))
    if fits:
        check_trial_fits(study, fixed=True)
        return
    with pytest.raises(ConfigError) as info:
        check_trial_fits(study, fixed=True)
    assert info.value.field == "resources"
    assert "the cluster has" in info.value.message or "no node offers" in info.value.message
    check_trial_fits(study, fixed=False)  # a cluster that may grow: a warning, no error


def test_a_two_worker_study_on_a_two_cpu_machine_is_refused_before_any_trial(tmp_path):
    """What hung for minutes on a 2-core machine (`it 0/N | starting`): 2 workers of 1 CPU plus
    the trial process never fit 2 CPUs. `resweep run` (its own embedded Ray) refuses it."""
    import subprocess
    import sys

    from conftest import ROOT

    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_study(resources={"workers": 2, "cpus_per_worker": 1})))
    code = ("import sys\nfrom resweep.errors import ResweepError\nfrom resweep.study import run_study\n"
            f"try:\n    run_study({str(path)!r}, study_dir={str(tmp_path / 'out')!r}, num_cpus=2, quiet=True)\n"
            "except ResweepError as exc:\n    print(exc, file=sys.stderr)\n    sys.exit(2)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert "resources" in out.stderr and "the cluster has 2 CPU" in out.stderr, out.stderr[-2000:]
    assert not list((tmp_path / "out").glob("trials*/*")), "no trial may have started"


def test_the_preflight_knows_every_metric_a_real_run_reports():
    """``TRAINING_METRICS`` and ``reportable_metrics`` restate the engine's metric names: a name
    the trainer reports but the preflight does not know would refuse a valid objective."""
    from resweep.config import ExperimentConfig
    from resweep.engine.trainer import Trainer
    from resweep.study.preflight import TRAINING_METRICS, reportable_metrics

    from conftest import CapturingReporter

    cfg = ExperimentConfig.from_dict(tiny_config_dict())
    reporter = CapturingReporter()
    Trainer(cfg, reporter=reporter).fit()
    evals, _ = reportable_metrics(cfg)
    numeric = {k for r in reporter.reports for k, v in r.items()
               if isinstance(v, int | float) and not isinstance(v, bool)}
    unknown = {k for k in numeric
               if not (k in TRAINING_METRICS or k in evals or k.startswith("loss."))
               and k.split(".", 1)[0] not in cfg.enabled_methods}
    # diverged/collapse flags are run bookkeeping, not objectives
    unknown -= {k for k in unknown if k in ("diverged",) or k.startswith(("divergence", "nonfinite"))}
    assert not unknown, f"reported but unknown to the study preflight: {sorted(unknown)}"
