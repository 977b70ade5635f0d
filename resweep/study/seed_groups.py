"""Optuna with several seeds: each suggested configuration runs once per seed, and Optuna is
told once per configuration, when every seed has ended.

The rule (also in docs/study.md):

- every seed finished -> COMPLETE with, per objective, the **mean over seeds** of each seed's
  last reported value (one value per objective for ``optuna_multi``);
- any seed diverged or errored -> **FAIL** (a configuration that collapses on one seed in
  two is not a good configuration; its other seeds' scores must not hide that, and a mean
  over the surviving seeds would reward exactly the unstable settings a study must expose);
- otherwise, any seed stopped early by the scheduler -> PRUNED (seeds stopped at different
  rungs have no common value to average);
- a finished seed that never reported an objective -> FAIL, with a warning naming it.

Ray's ``Repeater`` is not used: it tells the inner searcher ``nanmean`` of one metric, so a
diverged seed vanishes into the mean and a list of objectives cannot work.

Reports without the objective (training-loss lines between evaluations) are ordinary here:
the searcher keeps the last value of each objective per trial and never needs one in every
report. Its ``metric`` is ``None`` so Tune does not demand one either.

The searcher's own bookkeeping (groups, seeds handed out, groups told) is part of its state,
saved with Tune's experiment checkpoint, so a resumed study neither reruns a seed nor tells a
group twice.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any, Protocol

from ray.tune.search import Searcher

from resweep.status import Status
from resweep.study.trial_spec import TRIAL_KEY, TrialSpec

logger = logging.getLogger("resweep.study")


class TrialResolver(Protocol):
    def __call__(self, params: dict[str, Any], seed: int, group: str) -> TrialSpec: ...


@dataclass
class SeedGroup:
    group_id: str
    params: dict[str, Any]
    trial_ids: list[str] = field(default_factory=list)  # in seed order
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # trial -> objective -> last
    outcomes: dict[str, str] = field(default_factory=dict)  # trial -> Status value
    told: str | None = None  # what Optuna was told: complete / fail / pruned


class SeedGroupSearcher(Searcher):
    """Wraps an Optuna searcher (``searcher``); see the module docstring for the rule."""

    def __init__(
        self,
        searcher: Searcher,
        *,
        seeds: list[int],
        objectives: list[str],
        resolve: TrialResolver,
        max_invalid: int = 20,
    ):
        self.searcher = searcher  # the attribute name Tune's save/restore walks through
        self.seeds = list(seeds)
        self.objectives = list(objectives)
        self.resolve = resolve
        self.max_invalid = max_invalid
        self.groups: dict[str, SeedGroup] = {}
        self.trial_group: dict[str, str] = {}
        self.open_group: str | None = None
        self.next_group = 0
        super().__init__(metric=None, mode=None)

    # Tune hands the TuneConfig's metric/mode (none): the inner searcher already has its own.
    def set_search_properties(self, metric: str | None, mode: str | None, config: dict, **spec: Any) -> bool:
        return True

    # ------------------------------------------------------------------ suggesting
    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        group = self.groups.get(self.open_group) if self.open_group else None
        if group is None or len(group.trial_ids) >= len(self.seeds):
            group = self._new_group()
            if group is None or isinstance(group, str):
                return group  # None (wait) or Searcher.FINISHED
        seed = self.seeds[len(group.trial_ids)]
        spec = self.resolve(group.params, seed, group.group_id)
        group.trial_ids.append(trial_id)
        self.trial_group[trial_id] = group.group_id
        return {TRIAL_KEY: spec.to_payload()}

    def _new_group(self) -> SeedGroup | str | None:
        for _ in range(self.max_invalid):
            group_id = f"g{self.next_group:04d}"
            config = self.searcher.suggest(group_id)
            if config is None or config == Searcher.FINISHED:
                return config
            self.next_group += 1
            params = dict(config)
            try:
                self.resolve(params, self.seeds[0], group_id)
            except Exception as exc:  # a combination the config refuses: FAIL it, draw again
                logger.warning("configuration %s is not valid (%s): told Optuna FAIL", params, exc)
                self.searcher.on_trial_complete(group_id, None, error=True)
                continue
            group = SeedGroup(group_id=group_id, params=params)
            self.groups[group_id] = group
            self.open_group = group_id
            return group
        raise RuntimeError(f"{self.max_invalid} configurations in a row were invalid; check the search space")

    # ------------------------------------------------------------------ results
    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        group = self._group_of(trial_id)
        if group is None:
            return
        values = group.values.setdefault(trial_id, {})
        for metric in self.objectives:
            value = result.get(metric)
            if isinstance(value, int | float) and not isinstance(value, bool):
                values[metric] = float(value)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        group = self._group_of(trial_id)
        if group is None or trial_id in group.outcomes:
            return
        if result:
            self.on_trial_result(trial_id, result)
        group.outcomes[trial_id] = _outcome(result, error)
        if len(group.outcomes) == len(self.seeds) and group.told is None:
            self._tell(group)

    def _group_of(self, trial_id: str) -> SeedGroup | None:
        group_id = self.trial_group.get(trial_id)
        if group_id is None:
            logger.warning("trial %s is in no seed group; ignored", trial_id)
            return None
        return self.groups[group_id]

    def _tell(self, group: SeedGroup) -> None:
        annotate = getattr(self.searcher, "annotate", None)
        if annotate is not None:
            annotate(group.group_id, {
                "ray_trial_ids": list(group.trial_ids),
                "seeds": self.seeds[: len(group.trial_ids)],
                "seed_statuses": [group.outcomes.get(t) for t in group.trial_ids],
                "seed_values": [group.values.get(t, {}) for t in group.trial_ids],
            })
        outcomes = set(group.outcomes.values())
        if outcomes & {Status.DIVERGED.value, Status.ERRORED.value}:
            self.searcher.on_trial_complete(group.group_id, None, error=True)
            group.told = "fail"
            return
        if Status.PRUNED.value in outcomes:
            self.searcher.on_trial_complete(group.group_id, None, error=False)
            group.told = "pruned"
            return
        means: dict[str, float] = {}
        for metric in self.objectives:
            per_seed = [group.values.get(t, {}).get(metric) for t in group.trial_ids]
            if any(v is None or not math.isfinite(v) for v in per_seed):
                logger.warning(
                    "group %s: objective %s missing for a seed (values %s): told Optuna FAIL",
                    group.group_id, metric, per_seed,
                )
                self.searcher.on_trial_complete(group.group_id, None, error=True)
                group.told = "fail"
                return
            means[metric] = sum(per_seed) / len(per_seed)  # type: ignore[arg-type]
        self.searcher.on_trial_complete(group.group_id, means)
        group.told = "complete"

    # ------------------------------------------------------------------ state (Tune checkpoints it)
    def get_state(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        del state["searcher"]
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return False  # let Tune's ConcurrencyLimiter count trials


def _outcome(result: dict[str, Any] | None, error: bool) -> str:
    if error:
        return Status.ERRORED.value
    result = result or {}
    if result.get("status") == Status.DIVERGED or result.get("diverged"):
        return Status.DIVERGED.value
    if result.get("status") == Status.FINISHED:
        return Status.FINISHED.value
    return Status.PRUNED.value  # ended before its last iteration: stopped by the scheduler
