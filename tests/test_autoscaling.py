"""A study on Ray's own autoscaling simulator (the fake_multinode provider of
``ray.cluster_utils.AutoscalingCluster``; started by tests/autoscaling_cluster.py so that it
shares the machine): a head without the trials' resource, a worker node type that has it (at
most 2 nodes). The driver reads the node types from the head's autoscaling config, runs 2 trials
at a time once the nodes came (not 1, as the resources present at start would say), shows the
trials waiting for the nodes, and refuses a trial that no node type can hold before any trial.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from autoscaling_cluster import autoscaling_cluster

from resweep.study.results import read_trials

from conftest import ROOT, tiny_config_dict

pytestmark = pytest.mark.ray

HEAD = {"CPU": 1}  # the driver's node: no `trial_node`, so no trial runs there
WORKERS = {"ray.worker.trial": {"resources": {"CPU": 1, "trial_node": 1}, "node_config": {},
                                "min_workers": 0, "max_workers": 2}}


def _study(name: str, trial_node: float) -> dict:
    return {
        "name": name,
        # long enough (seconds) that two trials on two nodes overlap
        "base": tiny_config_dict(**{"train.iterations": 200, "eval.every": 100, "train.log_every": 50}),
        "seeds": [0, 1, 2, 3],
        "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"}],
        "resources": {"workers": 1, "cpus_per_worker": 1, "custom_resources": {"trial_node": trial_node}},
    }


def _run(tmp_path, address: str, env: dict, study: dict) -> subprocess.CompletedProcess:
    path = tmp_path / f"{study['name']}.yaml"
    path.write_text(yaml.safe_dump(study))
    return subprocess.run(
        [sys.executable, "-m", "resweep.cli", "run", str(path), "--dir", str(tmp_path / study["name"]),
         "--address", address],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )


@pytest.mark.slow
def test_a_study_runs_as_many_trials_as_the_autoscaled_cluster_holds(tmp_path):
    env_nodes = {"PYTHONPATH": str(ROOT), "RAY_raylet_start_wait_time_s": "180"}
    # the simulator's default idle timeout (6 s) ends a node that joined while the machine is too
    # busy to place a trial on it within 6 s: the second trial would then wait for a new node
    with autoscaling_cluster(HEAD, WORKERS, env=env_nodes, idle_timeout_minutes=5) as (address, auth):
        env = {**os.environ, **env_nodes, **auth, "PYTHONUNBUFFERED": "1"}

        # a trial asking for more than any node type offers: one line, before any trial
        refused = _run(tmp_path, address, env, _study("too-big", trial_node=2))
        assert refused.returncode == 2, refused.stdout[-3000:] + refused.stderr[-3000:]
        error = [ln for ln in refused.stderr.splitlines() if "resources" in ln]
        assert len(error) == 1, refused.stderr[-3000:]
        assert "1 CPU, 2 trial_node" in error[0] and "2 x ray.worker.trial (1 CPU, 1 trial_node)" in error[0]
        assert not read_trials(tmp_path / "too-big"), "no trial may have started"

        out = _run(tmp_path, address, env, _study("grows", trial_node=1))
        text = out.stdout + out.stderr
        assert out.returncode == 0, text[-4000:]

        (tmp_path.parent / "autoscaling-driver.txt").write_text(text)  # for a failure's reader
        # the driver's choice, and why: the node types of the head's autoscaling config
        line = next(ln for ln in text.splitlines() if ln.startswith("concurrency:"))
        assert line.startswith("concurrency: 2 trial(s) at a time") and "can grow to" in line, line
        assert "2 x ray.worker.trial" in line and "0 fit now" in line, line
        # before the nodes came, the trials said what they waited for
        assert "waiting for resources: 1 CPU, 1 trial_node" in text, text[-4000:]

        rows = read_trials(tmp_path / "grows")
        assert sorted(r["status"] for r in rows) == ["finished"] * 4, rows
        spans = sorted((r["started_at"], r["ended_at"]) for r in rows)
        overlapping = [(a, b) for a, b in zip(spans, spans[1:], strict=False) if b[0] < a[1]]
        assert overlapping, f"no two trials ran at once: {spans}"
        # never more than the 2 nodes hold
        for start, _ in spans:
            assert sum(1 for s, e in spans if s <= start < e) <= 2, spans
