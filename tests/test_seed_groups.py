"""SeedGroupSearcher without a Tune run: the rule for telling Optuna, and its saved state."""

from __future__ import annotations

import pickle

import pytest

from resweep.study.seed_groups import SeedGroupSearcher
from resweep.study.trial_spec import TRIAL_KEY, TrialSpec


class RecordingSearcher:
    """Stands for the Optuna searcher: hands out numbered configs, records what it is told."""

    metric = None
    mode = None

    def __init__(self):
        self.suggested: list[str] = []
        self.told: list[tuple[str, dict | None, bool]] = []

    def suggest(self, trial_id):
        self.suggested.append(trial_id)
        return {"optim.lr": 0.001 * len(self.suggested)}

    def on_trial_complete(self, trial_id, result=None, error=False):
        self.told.append((trial_id, result, error))


def resolve(params, seed, group):
    return TrialSpec(label="", seed=seed, params=params, experiment={"train": {"iterations": 8}}, group=group)


def make(seeds=(0, 1), objectives=("psnr",)):
    inner = RecordingSearcher()
    return SeedGroupSearcher(inner, seeds=list(seeds), objectives=list(objectives), resolve=resolve), inner


def spec_of(config) -> TrialSpec:
    return TrialSpec.from_payload(config[TRIAL_KEY])


def test_each_configuration_runs_once_per_seed_and_is_told_the_mean():
    searcher, inner = make()
    a, b, c = (spec_of(searcher.suggest(t)) for t in ("a", "b", "c"))
    assert (a.seed, b.seed, c.seed) == (0, 1, 0)
    assert a.params == b.params != c.params and a.group == b.group != c.group
    assert searcher.metric is None  # Tune must not demand the objective in every report
    searcher.on_trial_result("a", {"iteration": 2, "loss.total": 0.3})  # a loss-only report
    searcher.on_trial_result("a", {"iteration": 4, "psnr": 30.0})
    searcher.on_trial_complete("a", {"iteration": 8, "psnr": 31.0, "status": "finished"})
    assert inner.told == []  # the other seed has not ended
    searcher.on_trial_complete("b", {"iteration": 8, "psnr": 33.0, "status": "finished"})
    assert inner.told == [(a.group, {"psnr": pytest.approx(32.0)}, False)]
    searcher.on_trial_complete("b", {"iteration": 8, "psnr": 99.0, "status": "finished"})
    assert len(inner.told) == 1  # a repeated completion tells nothing


@pytest.mark.parametrize(
    ("second", "error", "expected"),
    [
        ({"iteration": 1, "status": "diverged", "diverged": 1}, False, (None, True)),  # before any eval
        (None, True, (None, True)),  # errored
        ({"iteration": 4, "psnr": 30.0, "status": "running"}, False, (None, False)),  # pruned
    ],
)
def test_a_seed_that_diverged_errored_or_was_pruned_decides_the_group(second, error, expected):
    searcher, inner = make()
    searcher.suggest("a")
    group = spec_of(searcher.suggest("b")).group
    searcher.on_trial_complete("a", {"iteration": 8, "psnr": 31.0, "status": "finished"})
    searcher.on_trial_complete("b", second, error=error)
    assert inner.told == [(group, *expected)]


def test_multi_objective_gets_one_mean_per_objective():
    searcher, inner = make(objectives=("psnr", "loss.total"))
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.on_trial_complete("a", {"psnr": 30.0, "loss.total": 0.2, "status": "finished"})
    searcher.on_trial_complete("b", {"psnr": 32.0, "loss.total": 0.4, "status": "finished"})
    (_, values, error), = inner.told
    assert not error and values == {"psnr": pytest.approx(31.0), "loss.total": pytest.approx(0.3)}


def test_finished_seed_without_objective_fails_the_group():
    searcher, inner = make(seeds=(0,))
    searcher.suggest("a")
    searcher.on_trial_complete("a", {"iteration": 8, "loss.total": 0.2, "status": "finished"})
    assert inner.told[0][1:] == (None, True)


def test_saved_state_resumes_the_open_group_without_repeating_seeds_or_tells():
    searcher, inner = make()
    searcher.suggest("a")
    searcher.suggest("b")
    searcher.suggest("c")  # group 2, seed 0; its seed 1 not handed out yet
    searcher.on_trial_complete("a", {"psnr": 30.0, "status": "finished"})
    searcher.on_trial_complete("b", {"psnr": 32.0, "status": "finished"})
    state = pickle.loads(pickle.dumps(searcher.get_state()))

    restored, inner2 = make()
    restored.set_state(state)
    d = spec_of(restored.suggest("d"))
    assert d.seed == 1 and d.group == spec_of(searcher.suggest("x")).group
    assert inner2.suggested == []  # no new configuration was drawn for the open group
    restored.on_trial_complete("b", {"psnr": 50.0, "status": "finished"})
    assert inner2.told == []  # group 1 was told before the save
