"""Which trials wait for resources that may still come (an autoscaler adding nodes, other
trials ending), for the progress display: ``waiting for resources: …`` instead of ``starting``.

Two kinds of waiting, told apart with what Tune and the cluster say:

- a trial Tune created but could not start (status PENDING) for a few seconds while the free
  resources of every node fall short of its process's bundle;
- a started multi-worker trial with no report yet while the cluster has a pending placement
  group of its workers' shape (Ray Train's worker group waiting to be placed). Placement groups
  do not say which trial made them: with k of them pending, the k latest started of the silent
  trials are shown waiting (identical trials: the count is right, the pairing a guess).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from resweep.study.capacity import TrialShape, fmt, trial_shape, trials_that_fit
from resweep.study.progress import Progress
from resweep.study.spec import ResourcesConfig
from resweep.study.trial_spec import TrialSpec

CHECK_INTERVAL_S = 2.0
#: a trial Tune just created is PENDING for a moment even when resources are free
PENDING_GRACE_S = 5.0
_WAITING_PG_STATES = ("PENDING", "RESCHEDULING")


class ResourceWaits:
    def __init__(self, resources: ResourcesConfig, *, clock: Callable[[], float] = time.monotonic,
                 cluster: Callable[[], tuple[list[dict[str, float]], list[list[dict[str, float]]]]] | None = None):
        self.shape: TrialShape = trial_shape(resources)
        self.clock = clock
        self.read_cluster = cluster or _read_cluster
        self.pending_since: dict[str, float] = {}
        self.labels: dict[str, tuple[str, int]] = {}
        self.last_check = -1e9

    def update(self, trials: list[Any], progress: Progress, force: bool = False) -> None:
        now = self.clock()
        if not force and now - self.last_check < CHECK_INTERVAL_S:
            return
        self.last_check = now
        pending = [t for t in trials if t.status == "PENDING"]
        for tid in set(self.pending_since) - {t.trial_id for t in pending}:
            self.pending_since.pop(tid)
            progress.run_waiting(tid, "", 0, None)
        silent = [s for s in progress.running.items() if s[1].seconds_per_step is None]
        overdue = [t for t in pending if now - self.pending_since.setdefault(t.trial_id, now) >= PENDING_GRACE_S]
        if not overdue and not (silent and self.shape.workers):
            for tid, _ in silent:
                progress.run_waiting(tid, "", 0, None)
            return
        try:
            free_per_node, waiting_groups = self.read_cluster()
        except Exception:  # the GCS busy or gone: the display waits for the next check
            return
        free = {k: sum(n.get(k, 0) for n in free_per_node) for k in self.shape.total()}
        blocked = not trials_that_fit(TrialShape(self.shape.process), free_per_node, limit=1)
        for trial in overdue:
            what = f"{fmt(self.shape.process)} for the trial (free now: {fmt(free)})" if blocked else None
            progress.run_waiting(trial.trial_id, *self._label(trial), what)
        worker_groups = sum(1 for g in waiting_groups if _same_bundles(g, list(self.shape.workers)))
        latest_first = sorted(silent, key=lambda s: -s[1].started_at)
        for i, (tid, _) in enumerate(latest_first):
            what = None
            if self.shape.workers and i < worker_groups:
                what = (f"{len(self.shape.workers)} worker(s) of {fmt(self.shape.workers[0])} "
                        f"(free now: {fmt(free)})")
            progress.run_waiting(tid, "", 0, what)

    def _label(self, trial: Any) -> tuple[str, int]:
        if trial.trial_id not in self.labels:
            try:
                spec = TrialSpec.from_tune_config(trial.config)
                self.labels[trial.trial_id] = (f"{trial.trial_id} {spec.describe()}", spec.iterations)
            except (KeyError, TypeError, ValueError):
                self.labels[trial.trial_id] = (trial.trial_id, 0)
        return self.labels[trial.trial_id]


def _same_bundles(group: list[dict[str, float]], bundles: list[dict[str, float]]) -> bool:
    if not bundles or len(group) != len(bundles):
        return False
    return all(set(g) == set(b) and all(abs(g[k] - b[k]) < 1e-6 for k in b) for g, b in zip(group, bundles, strict=True))


def _read_cluster() -> tuple[list[dict[str, float]], list[list[dict[str, float]]]]:
    """(free resources of each alive node, bundles of each placement group waiting to be placed)."""
    from ray._private.state import state
    from ray.util import placement_group_table

    free = [dict(r) for r in state.available_resources_per_node().values()]
    groups = [[dict(b) for _, b in sorted(pg.get("bundles", {}).items())]
              for pg in placement_group_table().values() if pg.get("state") in _WAITING_PG_STATES]
    return free, groups


def for_study_file(path: Any) -> ResourceWaits | None:
    """From a study folder's ``study.yaml`` (its resources section only: no trial is rebuilt)."""
    from resweep.config import read_yaml

    try:
        return ResourceWaits(ResourcesConfig.model_validate(read_yaml(path).get("resources") or {}))
    except Exception:  # the display only: a study runs without it
        return None
