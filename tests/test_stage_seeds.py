"""``seed: trial`` stages: one artifact per trial seed, each made once, each trial reading the
one of its own seed; a fixed seed (the default) stays one artifact shared by every seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import pytest
from pydantic import Field

from resweep.config import ExperimentConfig
from resweep.errors import ResweepError
from resweep.stages import ArtifactStore, StageDefinition, plan, produce, register_stage, stage_key
from resweep.stages.base import definition_digest
from resweep.stages.produce import trial_artifact_keys
from resweep.stages.train import TrainStage
from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict

MADE: list[int] = []


class SeedProbe(StageDefinition):
    """A test kind: records the seed it was made with."""

    kind: str = "test_seed_probe"
    seed: int | Literal["trial"] = Field(0)


@register_stage("test_seed_probe", SeedProbe)
def _produce_probe(definition: SeedProbe, out_dir: Path, context) -> dict[str, float]:
    MADE.append(int(definition.seed))
    (out_dir / "seed.json").write_text(json.dumps(definition.seed))
    return {"seed": float(definition.seed)}


def _study(stage: dict, seeds=(0, 1)) -> dict:
    return {
        "name": "seeds",
        "base": tiny_config_dict(**{"model.init_from": stage}),
        # two rows x two seeds: the rows of one seed share that seed's artifact
        "variants": [{"label": "a", "overrides": {}}, {"label": "b", "overrides": {"optim.lr": 5e-4}}],
        "seeds": list(seeds),
    }


def _driver_then_trials(study, storage: Path, scratch: Path) -> dict[tuple[str, int], str]:
    """What a study does, without Ray: the driver plans every trial's stages (each key once)
    and makes them; then each trial looks its artifacts up. Returns (label, seed) -> key."""
    planned, digests = {}, {}
    experiments = [(spec, ExperimentConfig.from_dict(spec.experiment)) for spec in study.trial_specs()]
    for _, experiment in experiments:
        steps, roles = plan(experiment.stages())
        for step in steps:
            planned.setdefault(step.key, step)
        for role, definition in experiment.stages().items():
            digests[definition_digest(definition)] = roles[role]
    for step in planned.values():
        produce(step, str(storage), scratch=scratch, log=lambda _: None)
    made_by_driver = len(MADE)
    keys = {}
    for spec, experiment in experiments:
        keys[(spec.label, spec.seed)] = trial_artifact_keys(
            experiment, str(storage), digests, scratch, log=lambda _: None)["model.init_from"]
    assert len(MADE) == made_by_driver, "a trial made an artifact the driver should have made"
    return keys


def test_a_trial_seed_stage_is_made_once_per_seed_and_each_trial_reads_its_own(tmp_path):
    MADE.clear()
    study = study_from_dict(_study({"kind": "test_seed_probe", "seed": "trial"}, seeds=(3, 7)))
    keys = _driver_then_trials(study, tmp_path / "store", tmp_path / "scratch")
    assert sorted(MADE) == [3, 7]  # two artifacts, each made once
    for (label, seed), key in keys.items():
        # the key is the one of a fixed-seed definition with this trial's seed
        assert key == stage_key(SeedProbe(seed=seed)), (label, seed)
        folder = ArtifactStore(tmp_path / "store").fetch(key, tmp_path / "scratch")
        assert json.loads((folder / "seed.json").read_text()) == seed
    assert keys[("a", 3)] == keys[("b", 3)] != keys[("a", 7)] == keys[("b", 7)]


def test_a_fixed_seed_stage_is_one_artifact_for_every_seed(tmp_path):
    MADE.clear()
    study = study_from_dict(_study({"kind": "test_seed_probe", "seed": 5}))
    keys = _driver_then_trials(study, tmp_path / "store", tmp_path / "scratch")
    assert MADE == [5] and set(keys.values()) == {stage_key(SeedProbe(seed=5))}


def test_a_train_stage_takes_the_trial_seed_into_its_experiment_and_key():
    pretrain = tiny_config_dict(**{"name": "pre", "train.iterations": 2, "train.seed": 0, "eval.sets": []})
    study = study_from_dict(_study({"kind": "train", "seed": "trial", "experiment": pretrain}, seeds=(0, 4)))
    by_seed = {}
    for spec in study.trial_specs():
        stage = ExperimentConfig.from_dict(spec.experiment).stages()["model.init_from"]
        assert stage.config().train.seed == spec.seed  # what the producer trains with
        by_seed.setdefault(spec.seed, set()).add(stage_key(stage))
    # one key per seed; seed 0's is the plain stage's (train.seed 0 written in its experiment)
    assert {s: len(k) for s, k in by_seed.items()} == {0: 1, 4: 1}
    assert by_seed[0] == {stage_key(TrainStage(experiment=pretrain))}
    seeded = dict(pretrain, train={**pretrain["train"], "seed": 4})
    assert by_seed[4] == {stage_key(TrainStage(experiment=seeded))}
    # an integer seed on the stage is that fixed seed for every trial, the same artifact as
    # writing it in the experiment
    fixed = study_from_dict(_study({"kind": "train", "seed": 4, "experiment": pretrain}))
    keys = {stage_key(ExperimentConfig.from_dict(s.experiment).stages()["model.init_from"])
            for s in fixed.trial_specs()}
    assert keys == by_seed[4]


def test_mae_pretraining_knob_takes_seed_trial():
    base = tiny_config_dict(**{
        "task": {"kind": "denoise", "scale": 1, "noise_sigma": 25.0}, "model.name": "unet_tiny",
        "methods.mae_loss": {"enabled": True, "variant": "ctmae",
                             "pretrain": {"arch": "tiny", "steps": 2, "crop": 32, "seed": "trial"}},
    })
    study = study_from_dict({"name": "m", "base": base, "seeds": [0, 2]})
    stages = {s.seed: ExperimentConfig.from_dict(s.experiment).stages()["mae_loss.encoder"]
              for s in study.trial_specs()}
    assert {seed: st.seed for seed, st in stages.items()} == {0: 0, 2: 2}
    assert stage_key(stages[0]) != stage_key(stages[2])


def test_an_unresolved_trial_seed_has_no_key():
    with pytest.raises(ResweepError, match="seed: trial"):
        stage_key(SeedProbe(seed="trial"))
    with pytest.raises(ResweepError, match="seed: trial"):
        definition_digest(SeedProbe(seed="trial"))


def test_an_optuna_driver_makes_the_base_configs_stages_for_every_seed(tmp_path, monkeypatch):
    """Optuna samples at run time, so the driver makes the base config's stages: with seed:
    trial, one per seed (before: only the base's train.seed, the others made inside trials)."""
    from resweep.stages import on_ray
    from resweep.study import experiment
    from resweep.study.layout import StudyLayout

    seen: list[int] = []

    def fake_prepare(experiments, storage, study_dir, **_):
        for config in experiments:
            seen.append(config.stages()["model.init_from"].seed)
        return on_ray.PreparedStages(storage)

    monkeypatch.setattr(on_ray, "prepare_stages", fake_prepare)
    data = _study({"kind": "test_seed_probe", "seed": "trial"}, seeds=(4, 9))
    data.update(variants=[], search={"algorithm": "optuna_tpe", "num_samples": 2},
                space={"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}})
    study = study_from_dict(data)
    experiment.prepare_study_stages(study, StudyLayout(tmp_path), str(tmp_path))
    assert sorted(seen) == [4, 9]


def _preset_stage_digests(name: str) -> dict[tuple[str, str], dict[int, str]]:
    """(row label, stage role) -> seed -> definition digest, over a preset's trials."""
    from resweep.presets import load_preset

    study = load_preset(name)
    out: dict[tuple[str, str], dict[int, str]] = {}
    for spec in study.trial_specs():
        for role, stage in ExperimentConfig.from_dict(spec.experiment).stages().items():
            out.setdefault((spec.label, role), {})[spec.seed] = definition_digest(stage)
    return out


def _presets_with_stages() -> list[str]:
    from resweep.config import read_yaml
    from resweep.presets import list_presets, preset_path

    # stages come from model.init_from or a method's pretraining / teacher
    words = ("init_from", "mae_loss", "eco")
    return [n for n in list_presets() if any(w in json.dumps(read_yaml(preset_path(n))) for w in words)]


@pytest.mark.parametrize("name", _presets_with_stages())
def test_each_preset_with_stages_says_which_seed_they_use_and_means_it(name):
    import re

    from resweep.presets import preset_path

    digests = _preset_stage_digests(name)
    said = set(re.findall(r"#\s*stage seed: (trial|fixed)\b", preset_path(name).read_text()))
    if not digests:
        assert not said, f"{name} has no stages"
        return
    assert len(said) == 1, f"{name}: say 'stage seed: trial' or 'stage seed: fixed' once, with why"
    (choice,) = said
    for (label, role), by_seed in digests.items():
        distinct = len(set(by_seed.values()))
        if choice == "trial":  # one artifact per seed
            assert distinct == len(by_seed) > 1, (name, label, role)
        else:  # one artifact for every seed
            assert distinct == 1, (name, label, role)


@pytest.mark.slow
@pytest.mark.ray
def test_a_study_makes_one_pretraining_per_seed_and_each_trial_starts_from_its_own(ray_local, tmp_path):
    """A real local study: a `train` stage with seed: trial, two seeds -> two artifacts, made
    by the driver (artifacts.parquet), each trial's artifact that of its seed."""
    import pyarrow.parquet as pq
    import torch
    import yaml

    from resweep.study import run_study

    pretrain = tiny_config_dict(**{"name": "pre", "train.iterations": 2, "train.log_every": 1, "eval.sets": []})
    study = study_from_dict({
        "name": "seed-trial",
        "base": tiny_config_dict(**{
            "model.init_from": {"kind": "train", "seed": "trial", "experiment": pretrain},
            "train.iterations": 2, "train.log_every": 1, "train.checkpoint_every": 2,
            "eval.every": 2,
        }),
        "seeds": [0, 1],
        "objectives": [{"metric": "loss.total", "mode": "min"}],
    })
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    rows = pq.read_table(study_dir / "artifacts.parquet").to_pylist()
    assert len(rows) == 2 and {r["status"] for r in rows} == {"produced"}
    store = ArtifactStore(study_dir)
    assert sorted(store.list_keys()) == sorted(r["key"] for r in rows)
    seed_of_key = {}
    for row in rows:
        folder = store.fetch(row["key"], tmp_path / "scratch")
        seed_of_key[row["key"]] = yaml.safe_load((folder / "config.yaml").read_text())["train"]["seed"]
    assert sorted(seed_of_key.values()) == [0, 1]
    trials = pq.read_table(study_dir / "trials.parquet").to_pylist()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"finished"}
    for trial in trials:
        key = json.loads(trial["artifacts"])["model.init_from"]
        assert seed_of_key[key] == trial["seed"]
    # the two pretrainings differ (different seeds), so the trials started from different weights
    w = [torch.load(store.fetch(k, tmp_path / "scratch") / "weights.pt", weights_only=True) for k in seed_of_key]
    assert any(not torch.equal(w[0][n], w[1][n]) for n in w[0])
