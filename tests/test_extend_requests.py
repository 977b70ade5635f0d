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


def test_warm_start_from_an_optuna_storage_tells_the_trials_inside_the_new_space(tmp_path: Path):
    """An Optuna storage URL: its COMPLETE trials whose parameters lie in the new space (and
    whose other parameters equal the new base) are told; the rest are not."""
    import optuna

    from resweep.study.warm_start import WARM_ATTR, Source, tell_optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'old.db'}"
    old = optuna.create_study(study_name="old", storage=url, direction="maximize")
    lr = optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True)
    pixel = optuna.distributions.CategoricalDistribution(["l1", "l2"])
    for params, value in [({"optim.lr": 5e-4}, 30.0), ({"optim.lr": 5e-5}, 29.0),  # 5e-5: outside
                          ({"optim.lr": 6e-4, "loss.pixel": "l2"}, 31.0),  # l2: the new base has l1
                          ({"optim.lr": 7e-4, "loss.pixel": "l1"}, 32.0)]:
        dists = {"optim.lr": lr, **({"loss.pixel": pixel} if "loss.pixel" in params else {})}
        old.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=value))
    study = study_from_dict({
        "name": "new", "base": tiny_config_dict(**{"loss.pixel": "l1"}),
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}},
        "search": {"algorithm": "optuna_tpe"}, "objectives": [{"metric": "eval.demo-eval.psnr_y"}],
    })
    new = optuna.create_study(direction="maximize")
    told = tell_optuna(new, study, [Source(name=f"{url}#old")])
    assert told == {f"{url}#old": 2}
    assert [(t.params, t.values) for t in new.trials] == [({"optim.lr": 5e-4}, [30.0]), ({"optim.lr": 7e-4}, [32.0])]
    assert all(t.user_attrs[WARM_ATTR] == f"{url}#old" for t in new.trials)
    assert tell_optuna(new, study, [Source(name=f"{url}#old")]) == {f"{url}#old": 0}  # once only
    assert len(new.trials) == 2
