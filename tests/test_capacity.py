"""What a trial holds, what a cluster holds or can grow to, the refusal of trials that never fit,
the concurrency the driver chooses, and the `waiting for resources` line (no Ray started here;
the real autoscaling cluster is in test_autoscaling.py)."""

from __future__ import annotations

import io
import itertools
import logging
import math
from types import SimpleNamespace

import pytest
import yaml

from resweep.errors import ConfigError
from resweep.study.capacity import (
    TRIAL_PROCESS_CPU,
    Cluster,
    NodeType,
    check_trial_fits,
    decide_concurrency,
    trial_shape,
    trials_that_fit,
    types_from_config,
)
from resweep.study.progress import Progress
from resweep.study.resource_wait import PENDING_GRACE_S, ResourceWaits
from resweep.study.spec import ResourcesConfig, study_from_dict

from conftest import ROOT, tiny_config_dict


def _study(resources: dict, **extra) -> object:
    return study_from_dict({"name": "cap", "base": tiny_config_dict(),
                            "seeds": [0, 1, 2, 3], "resources": resources, **extra})


# --------------------------------------------------------------------------- what a trial holds
def test_trial_shape_is_the_trial_process_then_its_workers():
    assert trial_shape(ResourcesConfig(cpus_per_worker=2, gpus_per_worker=0.5)).bundles == [{"CPU": 2, "GPU": 0.5}]
    shape = trial_shape(ResourcesConfig(workers=2, cpus_per_worker=1, gpus_per_worker=1,
                                        custom_resources={"trial_node": 1}))
    # Train V2's controller holds nothing (num_cpus=0, on the trial process's node); custom
    # resources go with each worker, the processes that train
    worker = {"CPU": 1, "GPU": 1, "trial_node": 1}
    assert shape.bundles == [{"CPU": TRIAL_PROCESS_CPU}, worker, worker]
    assert shape.total() == {"CPU": 2 + TRIAL_PROCESS_CPU, "GPU": 2, "trial_node": 2}


@pytest.mark.parametrize("bad, why", [({"CPU": 1}, "cpus_per_worker"), ({"trial": 0}, "> 0"),
                                       ({"node:10.0.0.1": 1}, "Ray's own")])
def test_custom_resources_are_custom_and_positive(bad, why):
    with pytest.raises(ConfigError) as info:
        _study({"custom_resources": bad})
    assert why in str(info.value) and "custom_resources" in str(info.value)


@pytest.mark.parametrize("cpus, gpus, nodes", itertools.product([1, 2, 3.5], [0, 0.25, 1], [1, 3]))
def test_single_bundle_trials_fill_identical_nodes_as_the_formula_says(cpus, gpus, nodes):
    """One bundle per trial on n identical nodes: n * min over kinds of floor(node / bundle)."""
    node = {"CPU": 8, "GPU": 2}
    shape = trial_shape(ResourcesConfig(cpus_per_worker=cpus, gpus_per_worker=gpus))
    expected = nodes * min(math.floor(node[k] / v) for k, v in shape.process.items())
    assert trials_that_fit(shape, [node] * nodes) == expected


def test_multi_worker_trials_count_the_trial_process_and_may_spread_over_nodes():
    shape = trial_shape(ResourcesConfig(workers=2, cpus_per_worker=1, in_process=False))
    assert trials_that_fit(shape, [{"CPU": 2}]) == 0  # 2 workers + the process's sliver > 2 (issue 20.11)
    assert trials_that_fit(shape, [{"CPU": 4}]) == 1  # 2 * 2.01 > 4
    # 2 nodes of 3 CPU: A on node 1 (2.01), B's process and workers split (node 1, node 2 x2)
    assert trials_that_fit(shape, [{"CPU": 3}, {"CPU": 3}]) == 2
    for n in range(1, 6):  # never above what the summed resources allow
        assert trials_that_fit(shape, [{"CPU": 3}] * n) <= math.floor(3 * n / (2 + TRIAL_PROCESS_CPU))


# --------------------------------------------------------------------------- the shipped cluster
def _shipped_cluster() -> Cluster:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    types, cap, source = types_from_config(config, "cluster.yaml")
    head = config["available_node_types"][config["head_node_type"]]["resources"]
    return Cluster(nodes=[dict(head)], head=dict(head), node_types=types, max_workers=cap, source=source)


def test_a_gpu_study_on_the_shipped_cluster_runs_as_many_trials_as_its_gpu_workers_hold():
    """Issue 20.5: the head has no GPU and the workers start at 0, so the resources present at
    start give concurrency 1; what the cluster can grow to is 8 g5.xlarge (1 GPU, 4 CPU each)."""
    cluster = _shipped_cluster()
    assert cluster.fits_now(trial_shape(ResourcesConfig(gpus_per_worker=0.25))) == 0
    small = _study({"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 0.25},
                   search={"algorithm": "grid"}, space={"train.seed": {"type": "grid", "values": list(range(20))}})
    decision = decide_concurrency(small, cluster, planned=100)
    assert decision.trials == 8 * 4  # 4 trials a GPU (and a CPU each of the 4): the comment's promise
    assert "can grow to" in decision.line and "8 x ray.worker.gpu" in decision.line
    ddp = _study({"workers": 2, "cpus_per_worker": 3, "gpus_per_worker": 1, "in_process": False})
    assert decide_concurrency(ddp, cluster, planned=100).trials == 4  # 2 GPUs of 2 nodes each
    assert decide_concurrency(ddp, cluster, planned=3).trials == 3  # never above the study's trials


def test_budget_max_concurrent_wins_and_says_so():
    decision = decide_concurrency(_study({}, budget={"max_concurrent": 3}), _shipped_cluster(), planned=4)
    assert decision.trials == 3 and "budget.max_concurrent" in decision.line


def test_without_node_types_concurrency_is_what_the_nodes_hold_now():
    cluster = Cluster(nodes=[{"CPU": 4}, {"CPU": 2}])
    decision = decide_concurrency(_study({"cpus_per_worker": 2}), cluster, planned=10)
    assert decision.trials == 3 and "hold now" in decision.line and "budget.max_concurrent" in decision.line


def test_the_cluster_max_workers_caps_the_node_types():
    types = [NodeType("small", {"CPU": 1}, 10), NodeType("big", {"CPU": 4}, 10)]
    cluster = Cluster(nodes=[{"CPU": 0}], head={"CPU": 0}, node_types=types, max_workers=3, source="x")
    assert cluster.fits_at_most(trial_shape(ResourcesConfig(cpus_per_worker=1))) == 12  # 3 big nodes
    unbounded = Cluster(nodes=[{"CPU": 0}], head={"CPU": 0}, node_types=[NodeType("any", {"CPU": 1}, 10**9)], source="x")
    assert unbounded.fits_at_most(trial_shape(ResourcesConfig(cpus_per_worker=1)), limit=50) == 50


# --------------------------------------------------------------------------- refusals
def test_a_trial_larger_than_every_node_type_is_refused_naming_both():
    study = _study({"workers": 1, "cpus_per_worker": 1, "gpus_per_worker": 1, "custom_resources": {"trial_node": 2}})
    cluster = Cluster(nodes=[{"CPU": 1}], head={"CPU": 1},
                      node_types=[NodeType("ray.worker.trial", {"CPU": 1, "GPU": 1, "trial_node": 1}, 2)], source="x")
    with pytest.raises(ConfigError) as info:
        check_trial_fits(study, cluster, fixed=False)  # growing cannot help: refused all the same
    message = info.value.message
    assert info.value.field == "resources" and "\n" not in message
    assert "1 CPU, 1 GPU, 2 trial_node" in message  # what was asked
    assert "2 x ray.worker.trial (1 CPU, 1 GPU, 1 trial_node)" in message  # what exists
    # one trial_node fits: no refusal, and none when nodes of that type may come
    check_trial_fits(_study({"gpus_per_worker": 1, "custom_resources": {"trial_node": 1}}), cluster, fixed=False)


def test_a_cluster_without_known_node_types_that_may_grow_gets_a_warning(caplog):
    study = _study({"gpus_per_worker": 1})
    cluster = Cluster(nodes=[{"CPU": 4}])
    with caplog.at_level(logging.WARNING, logger="resweep.study"):
        check_trial_fits(study, cluster, fixed=False)
    assert "trials wait until the cluster grows" in caplog.text
    with pytest.raises(ConfigError, match="the cluster has 4 CPU, 0 GPU"):
        check_trial_fits(study, cluster, fixed=True)


def test_the_autoscaling_config_is_found_from_the_clusters_monitor_process(tmp_path):
    from resweep.study.capacity import _types_from_monitor

    config = tmp_path / "bootstrap.yaml"
    config.write_text((ROOT / "cluster.yaml").read_text())
    proc = tmp_path / "proc"
    for pid, address in (("101", "10.0.0.9:6379"), ("202", "10.0.0.1:6379")):  # another cluster's, ours
        (proc / pid).mkdir(parents=True)
        args = ["python", "/x/ray/autoscaler/_private/monitor.py", f"--gcs-address={address}",
                f"--autoscaling-config={config if pid == '202' else '/nonexistent'}"]
        (proc / pid / "cmdline").write_bytes("\0".join(args).encode() + b"\0")
    types, cap, source = _types_from_monitor("10.0.0.1:6379", proc)
    assert [t.name for t in types] == ["ray.worker.gpu"] and cap == 8 and str(config) in source
    assert _types_from_monitor("10.0.0.5:6379", proc) is None


# --------------------------------------------------------------------------- waiting for resources
def test_the_progress_line_says_waiting_for_resources_instead_of_starting():
    out = io.StringIO()
    progress = Progress("s", total_runs=4, live=False, stream=out, plain_interval_s=1e9)
    progress.run_started("t1", "t1 base s0", 8)
    progress.run_started("t2", "t2 base s1", 8)
    progress.run_waiting("t2", "", 0, "2 worker(s) of 1 CPU (free now: 0.99 CPU)")
    progress.run_waiting("t3", "t3 base s2", 8, "1 CPU, 1 trial for the trial (free now: 0 CPU, 0 trial)")
    lines = out.getvalue().splitlines()[-4:]  # starting to wait printed a block at once
    assert "2 running, 1 waiting for resources" in lines[0]
    assert lines[1].strip().startswith("t1 base s0: it 0/8 | starting")
    assert "t2 base s1: it 0/8 | waiting for resources: 2 worker(s) of 1 CPU (free now: 0.99 CPU)" in lines[2]
    assert "t3 base s2: it 0/8 | waiting for resources: 1 CPU, 1 trial" in lines[3]
    progress.run_report("t2", {"iteration": 2, "time_per_step": 0.5})  # placed and training
    progress.run_started("t3", "t3 base s2", 8)
    now = 0.0
    assert "waiting" not in progress.summary_line(now)
    assert all("waiting" not in progress.run_line(s, now) for s in progress.running.values())
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    progress.run_waiting("t4", "t4 base s3", 8, "1 CPU (free now: 0 CPU)")
    console.print(progress.render())
    assert "waiting for resources: 1 CPU" in console.file.getvalue()


def _trial(tid: str, status: str) -> SimpleNamespace:
    return SimpleNamespace(trial_id=tid, status=status, config={})


def test_waiting_trials_are_told_from_tune_status_and_the_free_resources():
    clock = [0.0]
    cluster = {"free": [{"CPU": 1.0}], "groups": []}
    waits = ResourceWaits(ResourcesConfig(cpus_per_worker=1, custom_resources={"trial": 1}),
                          clock=lambda: clock[0], cluster=lambda: (cluster["free"], cluster["groups"]))
    progress = Progress("s", total_runs=4, live=False, stream=io.StringIO())
    pending = [_trial("a", "PENDING")]
    waits.update(pending, progress, force=True)
    assert not progress.waiting  # just created: Tune starts it in a moment
    clock[0] = PENDING_GRACE_S + 1
    waits.update(pending, progress, force=True)
    assert progress.waiting["a"].waiting == "1 CPU, 1 trial for the trial (free now: 1 CPU, 0 trial)"
    cluster["free"] = [{"CPU": 1.0, "trial": 1.0}]  # a node came: it fits, it is about to start
    waits.update(pending, progress, force=True)
    assert not progress.waiting
    cluster["free"] = [{"CPU": 1.0}]
    waits.update(pending, progress, force=True)
    progress.run_started("a", "a base s0", 8)
    waits.update([_trial("a", "RUNNING")], progress, force=True)
    assert not progress.waiting and progress.running["a"].waiting is None


def test_a_started_trial_whose_workers_are_not_placed_is_waiting():
    groups = []
    waits = ResourceWaits(ResourcesConfig(workers=2, cpus_per_worker=1, in_process=False),
                          clock=lambda: 0.0, cluster=lambda: ([{"CPU": 1.98}], groups))
    progress = Progress("s", total_runs=4, live=False, stream=io.StringIO())
    progress.run_started("a", "a", 8)
    progress.run_started("b", "b", 8)
    progress.running["b"].started_at = progress.running["a"].started_at + 1
    running = [_trial("a", "RUNNING"), _trial("b", "RUNNING")]
    groups.append([{"CPU": 1.0}, {"CPU": 2.0}])  # another shape: not a worker group of this study
    waits.update(running, progress, force=True)
    assert progress.running["a"].waiting is None and progress.running["b"].waiting is None
    groups.append([{"CPU": 1.0}, {"CPU": 1.0}])  # one worker group waits to be placed
    waits.update(running, progress, force=True)
    assert progress.running["a"].waiting is None
    assert progress.running["b"].waiting == "2 worker(s) of 1 CPU (free now: 1.98 CPU)"
    assert "b: it 0/8 | waiting for resources: 2 worker(s)" in progress.run_line(progress.running["b"], 0.0)
    groups.pop()
    waits.update(running, progress, force=True)
    assert progress.running["b"].waiting is None
