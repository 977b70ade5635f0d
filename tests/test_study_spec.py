"""Study files: validation before any trial starts, exact trial sets, conditional knobs."""

from __future__ import annotations

import itertools

import pytest
import yaml

from resweep.errors import ConfigError
from resweep.search_spaces import expand_grid, optuna_define_by_run, sample_random
from resweep.study.spec import load_study, study_from_dict

from conftest import tiny_config_dict


def _study(**fields) -> dict:
    data = {"name": "s", "base": tiny_config_dict(), "objectives": [{"metric": "eval.demo-eval.psnr_y"}]}
    data.update(fields)
    return data


def test_grid_two_knobs_two_seeds_gives_exactly_the_expected_trials():
    study = study_from_dict(
        _study(
            space={
                "optim.lr": {"type": "grid", "values": [1e-3, 1e-4]},
                "loss.pixel": {"type": "grid", "values": ["l1", "l2", "charbonnier"]},
            },
            seeds=[0, 7],
        )
    )
    trials = study.trial_configs()
    got = sorted((t["params"]["optim.lr"], t["params"]["loss.pixel"], t["seed"]) for t in trials)
    want = sorted(itertools.product([1e-3, 1e-4], ["l1", "l2", "charbonnier"], [0, 7]))
    assert got == want
    # each trial config is a valid experiment whose seed is the repeat's
    cfg = study.experiment_for(trials[0]["params"], trials[0]["seed"])
    assert cfg.train.seed == trials[0]["seed"]


def test_conditional_knob_only_exists_when_condition_holds():
    space = {
        "loss.pixel": {"type": "grid", "values": ["l1", "l2"]},
        "optim.lr": {"type": "grid", "values": [1e-3, 1e-4], "when": {"loss.pixel": "l2"}},
    }
    study = study_from_dict(_study(space=space))
    combos = expand_grid(study.space, study.base.to_dict())
    assert combos == [
        {"loss.pixel": "l1"},
        {"loss.pixel": "l2", "optim.lr": 1e-3},
        {"loss.pixel": "l2", "optim.lr": 1e-4},
    ]
    drawn = sample_random(study.space, 50, 0, study.base.to_dict())
    assert all(("optim.lr" in d) == (d["loss.pixel"] == "l2") for d in drawn)


def test_optuna_define_by_run_respects_conditions():
    import optuna

    space = {
        "loss.pixel": {"type": "choice", "values": ["l1", "l2"]},
        "optim.lr": {"type": "loguniform", "low": 1e-5, "high": 1e-2, "when": {"loss.pixel": "l2"}},
        "data.batch_size": {"type": "int", "low": 2, "high": 8, "step": 2},
    }
    study = study_from_dict(_study(space=space, search={"algorithm": "optuna_tpe", "num_samples": 4}))
    define = optuna_define_by_run(study.space, study.base.to_dict())
    ot = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = ot.ask()
        define(trial)
        assert ("optim.lr" in trial.params) == (trial.params["loss.pixel"] == "l2")
        assert trial.params["data.batch_size"] in (2, 4, 6, 8)
        ot.tell(trial, 0.0)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"space": {"optim.lrr": {"type": "grid", "values": [1]}}}, "space.optim.lrr", "unknown config path"),
        ({"space": {"optim.lr": {"type": "grid", "values": []}}}, "space.optim.lr", "at least one value"),
        ({"space": {"optim.lr": {"type": "loguniform", "low": 0.1, "high": 0.01}}}, "space.optim.lr", "low"),
        ({"space": {"optim.lr": {"type": "uniform", "low": 1, "high": 1}}}, "space.optim.lr", "low < high"),
        ({"space": {"optim.lr": {"type": "normal", "mean": 1}}}, "space.optim.lr", "type"),
        ({"search": {"algorithm": "bayes"}}, "search.algorithm", "grid"),
        ({"space": {"optim.lr": {"type": "grid", "values": [-1.0]}}}, "space.optim.lr", "greater than 0"),
        # a variant's bad override names the variant and its own field, not the space
        ({"variants": [{"label": "a"}, {"label": "bad", "overrides": {"optim.lr": -1.0}}]},
         "variants[1].overrides.optim.lr", "variant 'bad'"),
        ({"variants": [{"label": "a", "overrides": {"model.nme": "x"}}]}, "variants[0].overrides.model.nme", "unknown"),
    ],
)
def test_malformed_study_is_refused_with_the_field_path(tmp_path, fields, field, words):
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(_study(**fields)))
    with pytest.raises(ConfigError) as info:
        load_study(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message, message
    assert words in message, message


def test_base_by_path_and_overrides(tmp_path):
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(tiny_config_dict()))
    (tmp_path / "study.yaml").write_text(
        yaml.safe_dump({"name": "s", "base": "base.yaml", "overrides": {"train.iterations": 3}})
    )
    study = load_study(tmp_path / "study.yaml")
    assert study.base.train.iterations == 3 and study.base.model.name == "edsr_tiny"


def test_paper_schedule_applies_only_on_request(tmp_path):
    data = _study(paper_schedule={"train.iterations": 1000})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    assert load_study(tmp_path / "s.yaml").base.train.iterations == 8
    assert load_study(tmp_path / "s.yaml", paper_schedule=True).base.train.iterations == 1000


_ANCHORED_STUDY = """
name: s
base: {name: ft, task: {kind: denoise, scale: 1, noise_sigma: 25}, model: {name: unet_tiny},
       data: {train: {kind: demo, split: train}, patch_size: 12, batch_size: 4},
       train: {iterations: 8, log_every: 2}, eval: {every: 4, sets: []}}
variants:
  - label: plain
    overrides:
      model.init_from:
        kind: train
        experiment:
          <<: &pretrain
            name: pre
            task: {kind: denoise, scale: 1, noise_sigma: 25}
            model: {name: unet_tiny}
            data: {train: {kind: demo, split: train}, patch_size: 12, batch_size: 4}
            train: {iterations: 5, log_every: 1}
            eval: {every: 5, sets: []}
          name: pre-plain
  - label: rcl
    overrides:
      model.init_from:
        kind: train
        experiment: {<<: *pretrain, name: pre-rcl, methods: {rcl: {crop_size: 4, allow_random_features: true}}}
  - {label: scratch, overrides: {}}
objectives: [{metric: loss.total, mode: min}]
paper_schedule:
  train.iterations: 40
  model.init_from.experiment.train.iterations: 300
  model.init_from.experiment.methods.rcl.crop_size: 5
"""


def _stages(study) -> dict:
    out = {}
    for variant in study.variants:
        stage = study.experiment_for(variant.overrides, 0).stages().get("model.init_from")
        out[variant.label] = stage
    return out


def test_paper_schedule_reaches_the_stage_definitions_of_every_variant_that_has_them(tmp_path):
    from resweep.stages.base import definition_digest

    (tmp_path / "s.yaml").write_text(_ANCHORED_STUDY)
    short = _stages(load_study(tmp_path / "s.yaml"))
    long_study = load_study(tmp_path / "s.yaml", paper_schedule=True)
    long = _stages(long_study)
    assert long_study.base.train.iterations == 40
    assert short["scratch"] is None and long["scratch"] is None
    for label in ("plain", "rcl"):
        assert short[label].config().train.iterations == 5
        assert long[label].config().train.iterations == 300
        # a new definition, so a new artifact: the proxy-scale backbone is not reused
        assert definition_digest(short[label]) != definition_digest(long[label])
    # the section-scoped key reaches the RCL stage only: the plain stage gets no RCL section
    assert long["rcl"].experiment["methods"]["rcl"]["crop_size"] == 5
    assert "rcl" not in long["plain"].experiment.get("methods", {})
    # the caller's mapping is not changed: the same data without the flag is the short schedule
    data = yaml.safe_load(_ANCHORED_STUDY)
    study_from_dict(data, paper_schedule=True)
    again = study_from_dict(data)
    assert again.base.train.iterations == 8
    assert definition_digest(_stages(again)["rcl"]) == definition_digest(short["rcl"])


def test_paper_schedule_key_that_reaches_nothing_is_an_error_naming_it(tmp_path):
    text = _ANCHORED_STUDY.replace("model.init_from.experiment.train.iterations: 300",
                                   "model.init_from.experiment.training.iterations: 300")
    (tmp_path / "s.yaml").write_text(text)
    load_study(tmp_path / "s.yaml")  # not applied without the flag
    with pytest.raises(ConfigError, match=r"model\.init_from\.experiment\.training\.iterations") as info:
        load_study(tmp_path / "s.yaml", paper_schedule=True)
    assert "matches nothing" in str(info.value)
    # a typo in the last part lands in an existing section and the stage's strict config refuses it
    text = _ANCHORED_STUDY.replace("model.init_from.experiment.train.iterations: 300",
                                   "model.init_from.experiment.train.iteratons: 300")
    (tmp_path / "s.yaml").write_text(text)
    with pytest.raises(ConfigError, match="iteratons"):
        load_study(tmp_path / "s.yaml", paper_schedule=True)


def test_a_study_stopped_before_every_trial_ended_says_how_to_resume(tmp_path, capsys):
    """Ctrl+C or a time limit ends Tune's fit early: the driver must not claim the study is done."""
    from resweep.study.experiment import fit_study as _fit
    from resweep.study.layout import StudyLayout
    from resweep.study.results import StudyResults

    class StoppedTuner:  # what Tuner.fit returns after a stop signal: the trials it had
        def fit(self):
            return []

    layout = StudyLayout(tmp_path)
    results = StudyResults(tmp_path, meta={"name": "s", "objectives": []})
    results.write_meta()
    results.trial_result("t1", {"iteration": 4})
    results.trial_completed("t1", {"iteration": 4}, 4)
    _fit(StoppedTuner(), layout, planned=3)
    out = capsys.readouterr().out
    assert "stopped early: 1 of 3 trials ended" in out and f"resweep resume {tmp_path}" in out
    assert "study done" not in out
    _fit(StoppedTuner(), layout, planned=1)
    assert "study done: 1 finished" in capsys.readouterr().out
