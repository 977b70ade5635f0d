from __future__ import annotations

import pytest
import yaml

from resweep.config import ExperimentConfig, config_path_exists, load_config
from resweep.errors import ConfigError


def test_defaults_round_trip_through_yaml(tmp_path):
    cfg = ExperimentConfig.from_dict({"model": {"name": "edsr_tiny"}, "optim": {"lr": 3e-4}})
    path = tmp_path / "c.yaml"
    cfg.save(path)
    again = load_config(path)
    assert again == cfg
    assert again.to_dict() == yaml.safe_load(path.read_text())


def test_unknown_field_names_the_field_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: edsr_tiny}\noptim: {lr: 1e-3, momentumm: 0.9}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "optim.momentumm" in str(info.value)
    assert str(path) in str(info.value)


def test_wrong_type_and_bounds(tmp_path):
    with pytest.raises(ConfigError, match="optim.lr"):
        ExperimentConfig.from_dict({"model": {"name": "edsr_tiny"}, "optim": {"lr": -1}})
    with pytest.raises(ConfigError, match="scale"):
        ExperimentConfig.from_dict({"model": {"name": "edsr_tiny"}, "task": {"kind": "denoise", "scale": 2}})


def test_unknown_model_suggests_close_names():
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"model": {"name": "edsr_tiy"}})
    assert "edsr_tiny" in str(info.value)


def test_malformed_yaml_reports_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("model:\n  name: edsr_tiny\n optim: [\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "line" in str(info.value) and str(path) in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="not found"):
        load_config("/nonexistent/config.yaml")


def test_overrides_validate_paths():
    cfg = ExperimentConfig.from_dict({"model": {"name": "edsr_tiny"}})
    out = cfg.with_overrides({"optim.lr": 5e-4, "model.kwargs.n_feats": 8})
    assert out.optim.lr == 5e-4 and out.model.kwargs == {"n_feats": 8}
    assert cfg.optim.lr != 5e-4  # the original is untouched
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        cfg.with_overrides({"optim.learning_rate": 1})
    assert config_path_exists("train.divergence.max_abs_loss")
    assert not config_path_exists("train.divergence.nope")
    assert not config_path_exists("optim.lr.deeper")
