"""What `resweep extend` and `warm_start` refuse or resolve before any Ray starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from resweep.errors import ConfigError
from resweep.study.extend import _check_request
from resweep.study.spec import load_study, study_from_dict

from conftest import tiny_config_dict


def _study(algorithm: str = "grid", **extra):
    space = ({"optim.lr": {"type": "grid", "values": [1e-3]}} if algorithm == "grid"
             else {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}})
    return study_from_dict({"name": "s", "base": tiny_config_dict(), "space": space, "seeds": [0, 1],
                            "search": {"algorithm": algorithm, "num_samples": 2}, **extra})


def test_extend_refuses_what_it_cannot_add():
    with pytest.raises(ConfigError, match="already in the study") as err:
        _check_request(_study(), [1, 2], 0)
    assert err.value.field == "seeds"
    with pytest.raises(ConfigError, match="no samples to add") as err:
        _check_request(_study(), [], 3)
    assert err.value.field == "search.algorithm"
    with pytest.raises(ConfigError, match="max_trials"):
        _check_request(_study("random", budget={"max_trials": 2}), [2], 0)
    _check_request(_study("optuna_tpe", budget={"max_trials": 2}), [2], 3)  # Optuna: allowed
    _check_request(_study("random"), [2], 3)


def test_warm_start_folders_are_relative_to_the_study_file(tmp_path: Path):
    import yaml

    folder = tmp_path / "studies" / "new"
    folder.mkdir(parents=True)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump({
        "name": "new", "base": tiny_config_dict(),
        "warm_start": ["../old", "/abs/older", "sqlite:///x/optuna.db#old"],
    }))
    study = load_study(path)
    assert study.warm_start == [str(folder / "../old"), "/abs/older", "sqlite:///x/optuna.db#old"]
    path.write_text(yaml.safe_dump({"name": "new", "base": tiny_config_dict(), "warm_start": [" "]}))
    with pytest.raises(ConfigError) as err:
        load_study(path)
    assert "warm_start" in str(err.value)
