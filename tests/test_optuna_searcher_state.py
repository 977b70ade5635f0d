"""The study's Optuna searcher survives pickling whatever its sampler holds.

optuna 5.1's ``NSGAIISampler`` keeps a ``threading.Lock`` and cannot be pickled, and Tune pickles
the searcher when it builds the Tuner and at every searcher checkpoint: every ``optuna_multi``
study died at start. ``LockedTPE`` stands for any sampler of any release that holds locks, so
the test means the same whichever Optuna the lock file installs.
"""

from __future__ import annotations

import pickle
import threading

import optuna
import pytest

from resweep.study.optuna_search import DivergenceAwareOptunaSearch


class LockedTPE(optuna.samplers.TPESampler):
    """TPE holding a lock and a nested RLock, as a sampler of some release might."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._lock = threading.Lock()
        self._state_guard = {"rlock": threading.RLock(), "held_by_nobody": True}


def _locked_tpe(seed: int) -> LockedTPE:
    return LockedTPE(seed=seed, n_startup_trials=2)


def _sampler(kind: str, seed: int = 3):
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=2)
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=4)
    return _locked_tpe(seed)


def _searcher(kind: str) -> DivergenceAwareOptunaSearch:
    from ray import tune

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    multi = kind == "nsga2"
    return DivergenceAwareOptunaSearch(
        space={"x": tune.uniform(0.0, 1.0), "y": tune.loguniform(1e-4, 1e-1)},
        metric=["a", "b"] if multi else "a",
        mode=["max", "min"] if multi else "max",
        sampler=_sampler(kind),
    )


def _play(searcher: DivergenceAwareOptunaSearch, start: int, n: int) -> list[dict]:
    """Ask ``n`` configurations and report a score that depends on them."""
    configs = []
    for i in range(start, start + n):
        config = searcher.suggest(f"t{i}")
        configs.append(config)
        searcher.on_trial_complete(f"t{i}", {"a": config["x"] - config["y"], "b": config["y"]})
    return configs


def test_a_lock_holding_sampler_is_really_unpicklable_by_plain_pickle():
    # what made the old searcher fail; if this stops raising, the tests below prove less
    with pytest.raises(TypeError, match="lock"):
        pickle.dumps(_locked_tpe(0))


@pytest.mark.parametrize("kind", ["tpe", "nsga2", "locked_tpe"])
@pytest.mark.parametrize("how", ["pickle", "cloudpickle", "save_restore"])
def test_searcher_state_round_trips_and_the_sampler_continues_identically(tmp_path, kind, how):
    import ray.cloudpickle

    searcher = _searcher(kind)
    _play(searcher, 0, 5)
    if how == "pickle":
        restored = pickle.loads(pickle.dumps(searcher))
    elif how == "cloudpickle":  # what Tune does with the Tuner (tuner.pkl)
        restored = ray.cloudpickle.loads(ray.cloudpickle.dumps(searcher))
    else:  # Tune's searcher checkpoint; OptunaSearch.restore reads it
        path = tmp_path / "searcher.pkl"
        searcher.save(str(path))
        restored = _searcher(kind)
        restored.restore(str(path))

    assert [t.params for t in restored._ot_study.trials] == [t.params for t in searcher._ot_study.trials]
    # the random state came along: both draw the same next configurations
    assert _play(restored, 5, 4) == _play(searcher, 5, 4)
    # and the restored sampler's locks are real, unlocked locks of the same kinds
    for name, value in vars(restored._sampler).items():
        if isinstance(value, type(threading.Lock())):
            assert value.acquire(blocking=False), name
            value.release()


def test_tune_checkpoint_of_the_study_searcher_with_nsga2(tmp_path):
    """The real study searcher (seed groups around Optuna) inside Tune's SearchGenerator: its
    experiment checkpoint saves and restores with NSGA-II (the path that raised at start)."""
    from ray.tune.search.search_generator import SearchGenerator

    from resweep.study.layout import StudyLayout
    from resweep.study.spec import study_from_dict
    from resweep.study.tuner import searcher_and_space

    from conftest import tiny_config_dict

    study = study_from_dict({
        "name": "nsga",
        "base": tiny_config_dict(),
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
        "seeds": [0, 1],
        "search": {"algorithm": "optuna_multi", "num_samples": 4, "seed": 0},
        "objectives": [{"metric": "eval.demo-eval.psnr_y", "mode": "max"},
                       {"metric": "loss.total", "mode": "min"}],
    })
    searcher, _, _ = searcher_and_space(study, StudyLayout(tmp_path))
    pickle.dumps(searcher)  # Tuner construction
    generator = SearchGenerator(searcher)
    configs = [searcher.suggest(f"t{i}") for i in range(3)]
    generator.save_to_dir(str(tmp_path), "s")

    again, _, _ = searcher_and_space(study, StudyLayout(tmp_path))
    SearchGenerator(again).restore_from_dir(str(tmp_path))
    assert again.groups.keys() == searcher.groups.keys()
    # the 4th trial is the open group's second seed; the 5th asks NSGA-II for a new group
    assert again.suggest("t3") == searcher.suggest("t3")
    assert again.suggest("t4") == searcher.suggest("t4")
    assert configs[0]["trial"]["seed"] == 0 and configs[1]["trial"]["seed"] == 1
