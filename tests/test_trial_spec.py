"""Trial specs: resolved once on the driver, one encoding for grid and Optuna trials."""

from __future__ import annotations

import json

import pytest

from resweep.config import ExperimentConfig
from resweep.study.spec import study_from_dict
from resweep.study.trial_spec import TRIAL_KEY, TrialSpec
from resweep.study.tuner import StudyResolver

from conftest import tiny_config_dict


def _study(**extra):
    return study_from_dict({"name": "s", "base": tiny_config_dict(), "seeds": [0, 1], **extra})


def test_grid_specs_are_fully_resolved_and_seeds_share_a_group():
    study = _study(space={"optim.lr": {"type": "grid", "values": [1e-3, 1e-4]}},
                   variants=[{"label": "a", "overrides": {}}, {"label": "b", "overrides": {"loss.pixel": "l2"}}])
    specs = study.trial_specs()
    assert len(specs) == 2 * 2 * 2
    for spec in specs:
        experiment = ExperimentConfig.from_dict(spec.experiment)  # valid as shipped
        assert experiment.train.seed == spec.seed and experiment.optim.lr == spec.params["optim.lr"]
        assert experiment.loss.pixel == ("l2" if spec.label == "b" else study.base.loss.pixel)
    groups = {}
    for spec in specs:
        groups.setdefault(spec.group, []).append(spec)
    assert len(groups) == 4 and all(sorted(s.seed for s in g) == [0, 1] for g in groups.values())
    assert all(len({json.dumps(s.params, sort_keys=True) for s in g}) == 1 for g in groups.values())


def test_payload_round_trips_through_json_and_refuses_unknown_fields():
    spec = _study().trial_spec({"optim.lr": 3e-4}, 1, label="x", group="g0001")
    payload = json.loads(json.dumps(spec.to_payload()))
    assert TrialSpec.from_tune_config({TRIAL_KEY: payload}) == spec
    with pytest.raises(ValueError, match="unknown trial spec fields"):
        TrialSpec.from_payload({**payload, "settings": {}})


def test_optuna_draws_are_decoded_once_on_the_driver():
    study = _study(space={"schedule.milestones": {"type": "choice", "values": [[4, 6], [2]]}},
                   search={"algorithm": "optuna_tpe", "num_samples": 2})
    # Optuna's categorical holds non-primitive choices as JSON text; the resolver decodes them
    spec = StudyResolver(study)({"schedule.milestones": "json:[4, 6]"}, 0, "g0000")
    assert spec.params == {"schedule.milestones": [4, 6]} and spec.experiment["schedule"]["milestones"] == [4, 6]
