"""What a trial holds on a Ray cluster, what the cluster holds or can grow to, and what follows:
trials that can never run are refused before the first one, and the study runs as many trials
at a time as the cluster can hold when it is as large as its autoscaler may make it.

A trial is the Tune trial's own bundle (its process) plus, with a nested ``TorchTrainer``, its
workers' placement group. Ray Train V2's controller takes no resources (``num_cpus=0``, pinned
to the trial process's node; checked in ray 2.60). Whether trials fit is decided by placing
them, bundle by bundle, on the nodes (each bundle on one node), not by summing resources.

The autoscaler's node types come from the GCS where an autoscaler reports its cluster config
there (``ray._private.state.state.get_cluster_config()``; Ray's own monitor does not in 2.60),
else from the autoscaling config file the cluster's monitor process was started with, read on
the head (where ``ray exec`` runs the driver).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resweep.study.spec import ResourcesConfig, StudyConfig

logger = logging.getLogger("resweep.study")

#: what the process of a multi-worker trial asks for beside its TorchTrainer's workers
TRIAL_PROCESS_CPU = 0.01
_EPS = 1e-9
#: resources Ray gives every node that say nothing about what a trial can use
_BOOKKEEPING = ("memory", "object_store_memory")


@dataclass(frozen=True)
class TrialShape:
    """The bundles one trial holds: its process, then its workers (each on one node)."""

    process: dict[str, float]
    workers: tuple[dict[str, float], ...] = ()

    @property
    def bundles(self) -> list[dict[str, float]]:
        return [self.process, *self.workers]

    def total(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for bundle in self.bundles:
            for k, v in bundle.items():
                out[k] = out.get(k, 0) + v
        return out

    def describe(self) -> str:
        if not self.workers:
            return fmt(self.process)
        return (f"{fmt(self.total())} in all ({len(self.workers)} worker(s) of {fmt(self.workers[0])} "
                f"+ {fmt(self.process)} for the trial process)")


def trial_shape(r: ResourcesConfig) -> TrialShape:
    # custom resources go with each worker (the processes that train): they keep trials on the
    # nodes that offer them
    worker = {"CPU": r.cpus_per_worker, **_gpu(r.gpus_per_worker), **r.custom_resources}
    if r.workers == 1 and r.in_process:
        return TrialShape(worker)
    # the trial process only drives a TorchTrainer, whose workers hold the resources; Ray needs
    # a non-empty bundle, so it asks for a sliver of a CPU
    return TrialShape({"CPU": TRIAL_PROCESS_CPU}, tuple(dict(worker) for _ in range(r.workers)))


def _gpu(gpus: float) -> dict[str, float]:
    return {"GPU": gpus} if gpus else {}


def fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in resources.items()) or "nothing"


def trials_that_fit(shape: TrialShape, nodes: list[dict[str, float]], limit: int = 10_000) -> int:
    """How many trials of ``shape`` the ``nodes`` hold at once (first fit, bundle by bundle)."""
    free = [dict(n) for n in nodes]
    placed = 0
    while placed < limit:
        taken: list[tuple[int, dict[str, float]]] = []
        for bundle in shape.bundles:
            index = next((i for i, node in enumerate(free)
                          if all(node.get(k, 0) >= v - _EPS for k, v in bundle.items())), None)
            if index is None:
                for i, b in taken:  # give back what this trial took: it does not fit
                    for k, v in b.items():
                        free[i][k] += v
                return placed
            for k, v in bundle.items():
                free[index][k] = free[index].get(k, 0) - v
            taken.append((index, bundle))
        placed += 1
    return placed


@dataclass(frozen=True)
class NodeType:
    name: str
    resources: dict[str, float]
    max_workers: int

    def describe(self) -> str:
        return f"{self.max_workers} x {self.name} ({fmt(self.resources)})"


@dataclass
class Cluster:
    """The cluster's nodes now and, when an autoscaler is known, the node types it may add."""

    nodes: list[dict[str, float]]
    head: dict[str, float] | None = None
    node_types: list[NodeType] = field(default_factory=list)
    max_workers: int | None = None
    source: str = ""
    """where the node types came from (empty: no autoscaler known)"""

    @property
    def autoscales(self) -> bool:
        return bool(self.node_types)

    def largest(self, shape: TrialShape, enough: int = 10_000) -> list[dict[str, float]]:
        """The nodes of the cluster at its largest: the head, and each node type as many times
        as the autoscaler may launch it (the types that hold most trials first, when the
        cluster's own max_workers is smaller than the sum), at most ``enough`` of each."""
        ranked = sorted(self.node_types, key=lambda t: -trials_that_fit(shape, [t.resources], limit=64))
        budget = self.max_workers if self.max_workers is not None else sum(t.max_workers for t in ranked)
        nodes = [dict(self.head)] if self.head is not None else []
        for node_type in ranked:
            count = max(0, min(node_type.max_workers, budget, enough))
            nodes += [dict(node_type.resources) for _ in range(count)]
            budget -= count
        return nodes

    def fits_now(self, shape: TrialShape, limit: int = 10_000) -> int:
        return trials_that_fit(shape, self.nodes, limit)

    def fits_at_most(self, shape: TrialShape, limit: int = 10_000) -> int:
        now = self.fits_now(shape, limit)
        if not self.autoscales:
            return now
        # more nodes of a type than the trials have bundles change nothing (an unbounded type)
        return max(now, trials_that_fit(shape, self.largest(shape, limit * len(shape.bundles)), limit))

    def describe(self, kinds: list[str]) -> str:
        total = {k: sum(n.get(k, 0) for n in self.nodes) for k in kinds}
        text = f"the cluster has {fmt(total)} on {len(self.nodes)} node(s)"
        if self.autoscales:
            text += "; its autoscaler may add " + ", ".join(t.describe() for t in self.node_types)
            if self.max_workers is not None:
                text += f" (at most {self.max_workers} worker nodes)"
        return text


# --------------------------------------------------------------------------- reading the cluster
def read_cluster() -> Cluster:
    """The connected Ray cluster (``ray.init`` done)."""
    import ray

    nodes, head = [], None
    for node in ray.nodes():
        if not node.get("Alive"):
            continue
        resources = _usable(node.get("Resources", {}))
        nodes.append(resources)
        if "node:__internal_head__" in node.get("Resources", {}):
            head = resources
    cluster = Cluster(nodes=nodes, head=head)
    found = _types_from_gcs() or _types_from_monitor(_gcs_address())
    if found is not None:
        cluster.node_types, cluster.max_workers, cluster.source = found
    return cluster


def _usable(resources: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in resources.items() if k not in _BOOKKEEPING and not k.startswith("node:")}


def _gcs_address() -> str:
    import ray

    try:
        return ray.get_runtime_context().gcs_address
    except Exception:
        return ""


Found = tuple[list[NodeType], int | None, str]


def _types_from_gcs() -> Found | None:
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # an older GCS, or none reported
        return None
    if config is None or not config.node_group_configs:
        return None
    types = [NodeType(g.name, _usable(dict(g.resources)), g.max_count if g.max_count >= 0 else 10_000)
             for g in config.node_group_configs if g.max_count != 0]
    return types, None, "the cluster config its autoscaler reported to the GCS"


def _types_from_monitor(gcs_address: str, proc: Path = Path("/proc")) -> Found | None:
    """The node types in the autoscaling config of this cluster's monitor (autoscaler) process,
    when it runs on this machine (the head)."""
    if not gcs_address or not proc.is_dir():
        return None
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if not any(a.endswith("monitor.py") for a in args) or f"--gcs-address={gcs_address}" not in args:
            continue
        path = next((a.split("=", 1)[1] for a in args if a.startswith("--autoscaling-config=")), None)
        if path:
            return types_from_config_file(Path(path).expanduser())
    return None


def types_from_config_file(path: Path) -> Found | None:
    import yaml

    try:
        config = yaml.safe_load(path.read_text())  # the launcher writes YAML or JSON (JSON is YAML)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        logger.warning("could not read the autoscaling config %s: %s", path, exc)
        return None
    return types_from_config(config, f"the autoscaling config {path}")


def types_from_config(config: dict[str, Any], source: str) -> Found | None:
    """Worker node types of a cluster-launcher config (``available_node_types``)."""
    node_types = config.get("available_node_types") or {}
    head_type = config.get("head_node_type")
    types = []
    for name, spec in node_types.items():
        if name == head_type:
            continue  # the head is a live node: read from Ray
        count = int(spec.get("max_workers", config.get("max_workers", 0)) or 0)
        resources = _usable({k: float(v) for k, v in (spec.get("resources") or {}).items()})
        if count > 0 and resources:
            types.append(NodeType(name, resources, count))
    if not types:
        return None
    cap = config.get("max_workers")
    return types, int(cap) if cap is not None else None, source


# --------------------------------------------------------------------------- decisions
def check_trial_fits(study: StudyConfig, cluster: Cluster, *, fixed: bool) -> None:
    """Refuse resources no trial could ever get, before the first trial waits for them forever.

    Refused (an error naming what was asked and what exists) when the cluster cannot grow
    (``fixed``: the embedded local Ray) or when its autoscaler's node types are known and even
    the largest cluster they allow holds no trial; a cluster joined without known node types
    may still grow: a warning, and trials wait.
    """
    shape = trial_shape(study.resources)
    if cluster.fits_at_most(shape, limit=1):
        return
    kinds = list(dict.fromkeys(["CPU", "GPU", *shape.total()]))
    biggest = max(cluster.nodes, key=lambda n: tuple(n.get(k, 0) for k in reversed(kinds)), default={})
    message = (f"resources: a trial needs {shape.describe()}, and no arrangement of its bundles "
               f"on the nodes fits it: {cluster.describe(kinds)} (the largest node now: "
               f"{fmt({k: biggest.get(k, 0) for k in kinds})})")
    if fixed or cluster.autoscales:
        from resweep.errors import ConfigError

        fix = ("lower resources.workers / cpus_per_worker / gpus_per_worker"
               + (" / custom_resources" if study.resources.custom_resources else ""))
        raise ConfigError(f"{message}; {fix}", field="resources")
    logger.warning("%s: trials wait until the cluster grows (an autoscaler may add nodes)", message)


@dataclass(frozen=True)
class Concurrency:
    trials: int
    line: str
    """one line for the driver: how many trials at a time, and why"""


def decide_concurrency(study: StudyConfig, cluster: Cluster, planned: int) -> Concurrency:
    if study.budget.max_concurrent:
        n = study.budget.max_concurrent
        return Concurrency(n, f"concurrency: {n} trial(s) at a time, from budget.max_concurrent")
    shape = trial_shape(study.resources)
    now = cluster.fits_now(shape, limit=planned)
    if cluster.autoscales:
        n = max(1, now, cluster.fits_at_most(shape, limit=planned))
        why = (f"what the cluster can grow to ({', '.join(t.describe() for t in cluster.node_types)}, "
               f"from {cluster.source}; {now} fit now)")
    else:
        n = max(1, now)
        why = ("what the cluster's nodes hold now (no autoscaler node types found; set "
               "budget.max_concurrent if the cluster grows)")
    capped = " (the study's trials)" if n == planned else ""
    return Concurrency(n, f"concurrency: {n} trial(s) at a time{capped}, {why}; one trial holds {shape.describe()}")
