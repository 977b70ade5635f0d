"""cluster.yaml is valid for Ray's own cluster-launcher schema and keeps the dashboard private."""

from __future__ import annotations

import copy

import jsonschema
import pytest
import yaml

from conftest import ROOT


def _load():
    return yaml.safe_load((ROOT / "cluster.yaml").read_text())


def test_cluster_yaml_matches_ray_schema():
    from ray.autoscaler._private.util import validate_config

    validate_config(_load())


def test_schema_check_is_not_vacuous():
    from ray.autoscaler._private.util import validate_config

    broken = copy.deepcopy(_load())
    broken["available_node_types"]["ray.worker.gpu"]["min_workerz"] = 0
    with pytest.raises(jsonschema.ValidationError):
        validate_config(broken)


def test_cluster_installs_this_package_and_binds_dashboard_to_loopback():
    config = _load()
    assert any("pip install -e ." in cmd for cmd in config["setup_commands"])
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert config["head_node_type"] in config["available_node_types"]
