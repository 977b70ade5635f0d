"""A driver killed between Optuna's ``ask`` and Tune's searcher checkpoint, made deterministic:
the real study searcher (seed groups around Optuna, sqlite storage) is saved with Tune's own
SearchGenerator checkpoint, asks once more, is dropped (the kill), and is restored from that
checkpoint over the same storage. No Ray cluster and no kill timing is involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from resweep.study.layout import StudyLayout
from resweep.study.spec import StudyConfig, study_from_dict
from resweep.study.trial_spec import TRIAL_KEY, TrialSpec

from conftest import tiny_config_dict

OBJECTIVE = "eval.demo-eval.psnr_y"
GROUPS = 4
SEEDS = [0, 1]


def _study(algorithm: str) -> StudyConfig:
    objectives = [{"metric": OBJECTIVE, "mode": "max"}]
    if algorithm == "optuna_multi":
        objectives.append({"metric": "loss.total", "mode": "min"})
    return study_from_dict({
        "name": "interrupted-ask",
        "base": tiny_config_dict(),
        "space": {
            "optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3},
            "loss.pixel": {"type": "choice", "values": ["l1", "l2"]},
        },
        "seeds": SEEDS,
        "search": {"algorithm": algorithm, "num_samples": GROUPS, "seed": 0, "optuna_storage": "sqlite"},
        "objectives": objectives,
    })


class Driver:
    """What Tune's controller does with the searcher: the real searcher of the study, inside
    Tune's SearchGenerator (whose save_to_dir/restore_from_dir are the experiment checkpoint)."""

    def __init__(self, study: StudyConfig, folder: Path):
        from ray.tune.search.search_generator import SearchGenerator

        from resweep.study.tuner import searcher_and_space

        folder.mkdir(exist_ok=True)  # the runner makes the study folder before the searcher
        self.searcher, _, self.total = searcher_and_space(study, StudyLayout(folder))
        self.generator = SearchGenerator(self.searcher)
        self.generator._total_samples = self.total  # what add_configurations sets from num_samples
        self.next_id = 0

    def start_trial(self) -> str:
        trial_id = f"t{self.next_id:03d}"
        self.next_id += 1
        config = self.searcher.suggest(trial_id)
        assert isinstance(config, dict) and TRIAL_KEY in config, config
        return trial_id

    def finish(self, trial_id: str) -> None:
        spec = TrialSpec.from_payload(self._spec(trial_id))
        # a score that depends on the configuration and the seed, so the means are checkable
        score = 20.0 + 1000.0 * float(spec.params["optim.lr"]) + spec.seed
        self.searcher.on_trial_complete(
            trial_id, {OBJECTIVE: score, "loss.total": 1.0 / score, "status": "finished"}
        )

    def _spec(self, trial_id: str) -> dict:
        group = self.searcher.groups[self.searcher.trial_group[trial_id]]
        seed = SEEDS[group.trial_ids.index(trial_id)]
        return self.searcher.resolve(group.params, seed, group.group_id).to_payload()

    def run_to_end(self, unfinished: list[str]) -> None:
        """Start the remaining trials (Tune counts ``next_id`` of them made), finish them all."""
        while self.next_id < self.total:
            unfinished.append(self.start_trial())
        for trial_id in unfinished:
            self.finish(trial_id)


def _stored(folder: Path):
    import optuna

    return optuna.load_study(study_name="interrupted-ask", storage=f"sqlite:///{folder / 'optuna.db'}").trials


@pytest.mark.parametrize("algorithm", ["optuna_tpe", "optuna_multi"])
def test_an_ask_lost_with_the_driver_is_failed_and_the_resumed_study_draws_it_again(tmp_path, algorithm):
    import optuna

    from resweep.study.optuna_search import INTERRUPTED_ATTR

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study(algorithm)

    # the reference: the same study, never interrupted
    reference = Driver(study, tmp_path / "reference")
    reference.run_to_end([])
    expected = [t.params for t in _stored(tmp_path / "reference")]
    assert len(expected) == GROUPS and len({str(p) for p in expected}) == GROUPS

    # the interrupted driver: group 0 whole, group 1's first seed, then Tune's checkpoint ...
    folder = tmp_path / "study"
    first = Driver(study, folder)
    started = [first.start_trial() for _ in range(3)]
    first.finish(started[0])
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    first.generator.save_to_dir(str(checkpoint), "s")
    # ... then group 1's second seed and a new group (Optuna asks, writing to sqlite), then the kill
    first.start_trial()
    first.start_trial()
    assert [t.state for t in _stored(folder)] == [optuna.trial.TrialState.RUNNING] * 3
    orphan = _stored(folder)[2]
    del first

    resumed = Driver(study, folder)
    resumed.generator.restore_from_dir(str(checkpoint))
    resumed.next_id = 3  # Tune's restored trial list: t000..t002 (t000 ended)
    after_restore = _stored(folder)
    assert after_restore[2].state == optuna.trial.TrialState.FAIL, "the lost ask must not stay RUNNING"
    assert INTERRUPTED_ATTR in after_restore[2].user_attrs
    assert "ray_trial_ids" not in after_restore[2].user_attrs
    assert [t.state for t in after_restore[:2]] == [optuna.trial.TrialState.RUNNING] * 2  # still live

    resumed.run_to_end(started[1:3])
    stored = _stored(folder)
    real = [t for t in stored if INTERRUPTED_ATTR not in t.user_attrs]
    assert [t.number for t in stored if INTERRUPTED_ATTR in t.user_attrs] == [orphan.number]
    assert len(real) == GROUPS
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in real)
    # no configuration lost or run twice: the same configurations as the uninterrupted study,
    # the lost one among them (the restored, seeded sampler drew it again)
    assert [t.params for t in real] == expected
    assert orphan.params in expected
    for t in real:
        ids = t.user_attrs["ray_trial_ids"]
        assert len(ids) == len(SEEDS) and t.user_attrs["seeds"] == SEEDS
        seed_scores = [20.0 + 1000.0 * t.params["optim.lr"] + s for s in SEEDS]
        assert t.values[0] == pytest.approx(sum(seed_scores) / len(seed_scores))
    all_ids = [i for t in real for i in t.user_attrs["ray_trial_ids"]]
    assert len(all_ids) == len(set(all_ids)) == GROUPS * len(SEEDS)


def test_restore_without_a_lost_ask_fails_nothing(tmp_path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = _study("optuna_tpe")
    first = Driver(study, tmp_path)
    started = [first.start_trial() for _ in range(3)]
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    first.generator.save_to_dir(str(checkpoint), "s")
    del first
    resumed = Driver(study, tmp_path)
    resumed.generator.restore_from_dir(str(checkpoint))
    resumed.next_id = 3
    assert [t.state for t in _stored(tmp_path)] == [optuna.trial.TrialState.RUNNING] * 2
    resumed.run_to_end(started)
    assert [t.state for t in _stored(tmp_path)] == [optuna.trial.TrialState.COMPLETE] * GROUPS


def test_a_grid_resumed_from_an_older_checkpoint_loses_no_row_and_repeats_none(tmp_path):
    """resweep's grid is Tune's variant generator over the resolved trial specs (no Optuna, no
    searcher of ours). Trials it made after the last experiment checkpoint die with the driver;
    the generator restored from that checkpoint makes them again, so every planned trial runs
    exactly once."""
    from ray.tune.experiment import Experiment
    from ray.tune.search.basic_variant import BasicVariantGenerator

    from resweep.study.tuner import searcher_and_space

    study = study_from_dict({
        "name": "grid-window", "base": tiny_config_dict(), "seeds": SEEDS,
        "space": {"optim.lr": {"type": "grid", "values": [1e-3, 5e-4, 2e-4]}},
        "variants": [{"label": "l1"}, {"label": "l2", "overrides": {"loss.pixel": "l2"}}],
    })
    search_alg, param_space, num_samples = searcher_and_space(study, StudyLayout(tmp_path))
    assert search_alg is None  # Tune's own BasicVariantGenerator

    def trainable(config):  # never run: only the generator's trials are looked at
        pass

    def specs(trials) -> list[dict]:
        return [trial.config[TRIAL_KEY] for trial in trials]

    first = BasicVariantGenerator()
    first.add_configurations([Experiment("grid", trainable, config=param_space, num_samples=num_samples,
                                         storage_path=str(tmp_path))])
    kept = [first.next_trial() for _ in range(5)]
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    first.save_to_dir(str(checkpoint), "s")
    lost = [first.next_trial() for _ in range(3)]  # made after the checkpoint, lost with the kill
    assert all(lost)

    resumed = BasicVariantGenerator()
    resumed.restore_from_dir(str(checkpoint))
    made = []
    while (trial := resumed.next_trial()) is not None:
        made.append(trial)
    assert resumed.is_finished()
    planned = [spec.to_payload() for spec in study.trial_specs()]
    assert len(planned) == 2 * 3 * len(SEEDS)
    assert specs(kept) + specs(made) == planned
    assert specs(made)[:3] == specs(lost)
