"""``--paper-schedule`` reaches every row: a row that sets its own training length says its
paper value or why it keeps it; over every shipped preset, no trial keeps a reduced length."""

from __future__ import annotations

from typing import Any

import pytest

from resweep.config import ExperimentConfig, read_yaml
from resweep.errors import ConfigError
from resweep.presets import list_presets, load_preset, preset_path
from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict


def _study(**fields: Any) -> dict:
    data = {
        "name": "s", "base": tiny_config_dict(**{"train.iterations": 8}),
        "variants": [{"label": "plain", "overrides": {}},
                     {"label": "long", "overrides": {"train.iterations": 20}}],
        "paper_schedule": {"train.iterations": 100},
    }
    data.update(fields)
    return data


def _iterations(study) -> dict[str, int]:
    return {t["label"]: study.experiment_for(t["params"], t["seed"]).train.iterations for t in study.trial_configs()}


def test_a_row_that_sets_its_length_without_a_paper_value_is_refused_naming_it():
    study_from_dict(_study())  # the reduced budget itself is fine
    with pytest.raises(ConfigError, match=r"variant 'long' keeps train\.iterations = 20") as info:
        study_from_dict(_study(), paper_schedule=True)
    assert "paper_schedule_keeps" in str(info.value) and "plain" not in str(info.value)


def test_a_rows_own_paper_value_is_applied_to_that_row_only():
    data = _study()
    data["variants"][1]["paper_schedule"] = {"train.iterations": 500}
    assert _iterations(study_from_dict(data)) == {"plain": 8, "long": 20}
    assert _iterations(study_from_dict(data, paper_schedule=True)) == {"plain": 100, "long": 500}


def test_a_kept_length_needs_a_reason_and_a_stale_exemption_is_refused():
    data = _study()
    data["variants"][1]["paper_schedule_keeps"] = {"train.iterations": "the paper trains this row 20 steps"}
    assert _iterations(study_from_dict(data, paper_schedule=True)) == {"plain": 100, "long": 20}
    data["variants"][1]["paper_schedule_keeps"] = {"train.iterations": "  "}
    with pytest.raises(ConfigError, match="paper_schedule_keeps"):
        study_from_dict(data)
    # an exemption for a length the schedule changes anyway is not true: refused
    del data["variants"][1]["paper_schedule_keeps"]
    data["variants"][1]["paper_schedule"] = {"train.iterations": 500}
    data["paper_schedule_keeps"] = {"train.iterations": "every row keeps it"}
    with pytest.raises(ConfigError, match=r"^.*paper_schedule_keeps\.train\.iterations.*drop the exemption"):
        study_from_dict(data, paper_schedule=True)


def test_a_schedule_that_scales_no_length_is_refused():
    with pytest.raises(ConfigError, match=r"the base config keeps train\.iterations = 8"):
        study_from_dict(_study(variants=[], paper_schedule={"optim.lr": 1e-4}), paper_schedule=True)


def test_milestones_must_follow_the_iterations():
    data = _study(variants=[])
    data["base"]["schedule"] = {"kind": "step", "milestones": [4]}
    with pytest.raises(ConfigError, match=r"schedule\.milestones = \[4\]"):
        study_from_dict(data, paper_schedule=True)
    data["paper_schedule"]["schedule.milestones"] = [60]
    assert study_from_dict(data, paper_schedule=True).base.schedule.milestones == [60]


def test_a_config_path_key_reaches_inside_a_section_a_row_overrides():
    """A row that overrides the whole ``schedule`` section gets the schedule's milestones
    inside it; before, the row's section silently kept its reduced milestones."""
    data = _study(variants=[{"label": "step", "overrides": {"schedule": {"kind": "step", "milestones": [4]}}}])
    data["paper_schedule"]["schedule.milestones"] = [60]
    study = study_from_dict(data, paper_schedule=True)
    (trial,) = study.trial_configs()
    assert study.experiment_for(trial["params"], 0).schedule.milestones == [60]


def test_a_stage_length_that_stays_is_named_by_its_stage_role():
    pretrain = tiny_config_dict(**{"name": "pre", "train.iterations": 5, "eval.sets": []})
    data = _study(variants=[{"label": "pre", "overrides": {"model.init_from": {"kind": "train", "experiment": pretrain}}}])
    with pytest.raises(ConfigError, match=r"model\.init_from\.experiment\.train\.iterations = 5"):
        study_from_dict(data, paper_schedule=True)
    data["paper_schedule"]["model.init_from.experiment.train.iterations"] = 50
    study = study_from_dict(data, paper_schedule=True)
    stage = study.experiment_for(study.trial_configs()[0]["params"], 0).stages()["model.init_from"]
    assert stage.config().train.iterations == 50


# --------------------------------------------------------------------------- every shipped preset
def _lengths(experiment: ExperimentConfig, prefix: str = "") -> dict[str, Any]:
    """An independent walk: every leaf named iterations / steps / milestones (step schedules)
    of the trial's train and schedule sections and of every stage definition it makes, through
    a ``train`` stage's experiment into that experiment's own stages."""
    out: dict[str, Any] = {f"{prefix}train.iterations": experiment.train.iterations}
    if experiment.schedule.kind == "step":
        out[f"{prefix}schedule.milestones"] = experiment.schedule.milestones
    for role, stage in experiment.stages().items():
        out.update(_stage_lengths(stage, f"{prefix}{role}."))
    return out


def _stage_lengths(stage: Any, prefix: str) -> dict[str, Any]:
    dumped = stage.model_dump(mode="json")
    if "experiment" in dumped:  # a stage that trains an experiment (kind train)
        return _lengths(stage.config(), f"{prefix}experiment.")
    out = {f"{prefix}{k}": v for k, v in dumped.items() if k in ("steps", "iterations", "epochs")}
    for role, dependency in stage.dependencies().items():
        out.update(_stage_lengths(dependency, f"{prefix}{role}."))
    return out


PAPER_PRESETS = [name for name in list_presets() if read_yaml(preset_path(name)).get("paper_schedule")]


def test_every_preset_but_the_demo_has_a_paper_schedule():
    assert set(list_presets()) - set(PAPER_PRESETS) == {"demo"}


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_no_row_of_a_shipped_preset_keeps_a_reduced_length_unless_it_says_why(name):
    short, long = load_preset(name), load_preset(name, paper_schedule=True)
    trials = [t for t in short.trial_configs() if t["seed"] == short.seeds[0]]
    long_trials = [t for t in long.trial_configs() if t["seed"] == short.seeds[0]]
    assert [t["label"] for t in trials] == [t["label"] for t in long_trials]
    keeps = {v.label: {**long.paper_schedule_keeps, **v.paper_schedule_keeps} for v in long.variants}
    for a, b in zip(trials, long_trials, strict=True):
        before = _lengths(short.experiment_for(a["params"], a["seed"]))
        after = _lengths(long.experiment_for(b["params"], b["seed"]))
        kept = {k for k, v in before.items() if after.get(k) == v}
        assert kept <= set(keeps.get(a["label"], long.paper_schedule_keeps)), (name, a["label"], kept)
        # the main training run itself always gets longer
        assert after["train.iterations"] > before["train.iterations"], (name, a["label"])


@pytest.mark.parametrize("name", ["rcl_table1", "rcl_table2"])
def test_rcl_oracle_rows_train_as_long_as_the_pretraining_under_the_paper_schedule(name):
    long = load_preset(name, paper_schedule=True)
    by_label = {t["label"]: long.experiment_for(t["params"], 0) for t in long.trial_configs()}
    pretraining = {e.stages()["model.init_from"].config().train.iterations
                   for e in by_label.values() if "model.init_from" in e.stages()}
    assert pretraining == {100000}
    oracles = {label: e.train.iterations for label, e in by_label.items() if label.endswith("oracle")}
    assert oracles and set(oracles.values()) == pretraining, oracles
