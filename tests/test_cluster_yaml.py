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
    # the lock, into a virtual environment (PEP 668 images refuse system-wide pip installs)
    assert any("scripts/setup.sh" in cmd for cmd in config["setup_commands"])
    assert not any("pip install" in cmd for cmd in config["setup_commands"] if not cmd.lstrip().startswith("#"))
    head = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head and "0.0.0.0" not in head
    assert config["head_node_type"] in config["available_node_types"]


def test_every_node_authenticates_runs_the_venv_ray_and_can_reach_the_storage():
    config = _load()
    for commands in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in config[commands] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c and "RAY_AUTH_TOKEN_PATH=" in c for c in start)
        assert all(".venv/bin/ray" in c for c in config[commands])
    token_target = next(t for t, src in config["file_mounts"].items() if "ray_token" in str(src))
    assert all(f"RAY_AUTH_TOKEN_PATH=$HOME/{token_target.removeprefix('/home/ubuntu/')}" in c
               for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"] if "ray start" in c)
    for name, node_type in config["available_node_types"].items():
        assert "IamInstanceProfile" in node_type["node_config"], f"{name} has no credentials for S3"
    # trials never land on the CPU-only head
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("CPU") == 0
