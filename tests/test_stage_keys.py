"""Artifact keys are computed once, on the driver, and saved with the study; trials are given
them. Stages made inside a trial run on the trial's device and are recorded like the driver's;
a trial's scratch folder is deleted when it ends."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from resweep.config import ExperimentConfig
from resweep.errors import ResweepError
from resweep.stages import ArtifactStore, StageDefinition, register_stage, stage_key
from resweep.stages.study_keys import StudyStageKeys
from resweep.study.trial_spec import TrialSettings

from conftest import tiny_config_dict

SEEN_DEVICES: list = []


class DeviceProbe(StageDefinition):
    """A test kind: its identity reads a file's mtime (as a data set's does); its producer
    records the device it was given."""

    kind: str = "test_device_probe"
    data: str = ""
    width: int = 1

    def identity(self) -> dict:
        st = Path(self.data).stat()  # raises where the file is missing: the trial's "node"
        return {"size": st.st_size, "mtime": st.st_mtime_ns}


@register_stage("test_device_probe", DeviceProbe)
def _produce_probe(definition: DeviceProbe, out_dir: Path, context) -> dict[str, float]:
    SEEN_DEVICES.append(context.device)
    (out_dir / "width.json").write_text(json.dumps(definition.width))
    return {"width": float(definition.width)}


def _experiment(data: Path, width: int = 1) -> ExperimentConfig:
    stage = {"kind": "test_device_probe", "data": str(data), "width": width}
    return ExperimentConfig.from_dict(tiny_config_dict(**{"model.init_from": stage}))


def test_saved_keys_are_reused_after_the_data_changed(tmp_path):
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    experiment = _experiment(data)
    keys = StudyStageKeys(tmp_path / "stage_keys.json")
    _, roles = keys.plan(experiment.stages())
    saved = (tmp_path / "stage_keys.json").read_bytes()
    os.utime(data, ns=(1, 1))  # the file is touched (or another node's copy has another mtime)
    fresh = stage_key(experiment.stages()["model.init_from"])
    assert fresh != roles["model.init_from"]  # computing again would name another artifact
    # a resumed driver reads the saved keys: same key, nothing recomputed or rewritten
    again, roles_again = StudyStageKeys(tmp_path / "stage_keys.json").plan(experiment.stages())
    assert roles_again == roles and (tmp_path / "stage_keys.json").read_bytes() == saved
    assert again[0].identity == json.loads(saved)["identities"][roles["model.init_from"]]


def test_a_trial_makes_its_stage_on_its_device_with_the_drivers_key_and_deletes_its_scratch(tmp_path, monkeypatch):
    import torch

    from resweep.stages.scratch import scratch_root
    from resweep.trainables import tune_trial
    from resweep.trainables.trial_log import TrialLog

    monkeypatch.setenv("RESWEEP_SCRATCH", str(tmp_path / "scratch"))
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    experiment = _experiment(data, width=3)  # a definition the driver did not make (a sampled knob)
    driver_keys = StudyStageKeys(tmp_path / "study" / "stage_keys.json").keys_for(experiment)
    data.unlink()  # this "node" lacks the driver's file: a trial reading it to name the key fails
    storage = tmp_path / "store"
    settings = TrialSettings(storage=str(storage), study_dir=str(tmp_path / "study"), artifact_keys=driver_keys)
    device = torch.device("cpu", 0)  # what the trial passes: its own (cuda:0 on a GPU trial)
    SEEN_DEVICES.clear()
    uris = tune_trial._artifact_uris(experiment, settings, "trial_00001", TrialLog(None), device)
    assert [device] == SEEN_DEVICES  # the trial's device reached the producer
    (key,) = driver_keys.values()
    assert uris == {"model.init_from": str(storage / "artifacts" / key)}
    marker = ArtifactStore(storage).committed(key).marker
    assert marker["made_by"] == {"study": str(tmp_path / "study"), "trial": "trial_00001"}
    # its scratch folder is gone, also when making the stage raises
    assert not list((scratch_root() / "trials").iterdir())
    with pytest.raises(ResweepError, match="no key"):  # a stage the driver gave no key for
        tune_trial._artifact_uris(_experiment(data, width=4), settings, "trial_00002", TrialLog(None), device)
    assert not list((scratch_root() / "trials").iterdir())


def test_a_multi_worker_trial_makes_its_stage_with_one_workers_resources(tmp_path, monkeypatch):
    from resweep.stages import on_ray
    from resweep.trainables import tune_trial
    from resweep.trainables.trial_log import TrialLog

    monkeypatch.setenv("RESWEEP_SCRATCH", str(tmp_path / "scratch"))
    data = tmp_path / "data.bin"
    data.write_bytes(b"x")
    experiment = _experiment(data, width=5)
    keys = StudyStageKeys(tmp_path / "keys.json").keys_for(experiment)
    asked = []
    monkeypatch.setattr(on_ray, "produce_as_task", lambda step, storage, **kw: asked.append((step.key, kw)))
    settings = TrialSettings(workers=2, in_process=False, cpus_per_worker=2, gpus_per_worker=1,
                             storage=str(tmp_path / "store"), study_dir="s", artifact_keys=keys)
    tune_trial._artifact_uris(experiment, settings, "t1", TrialLog(None))
    assert asked == [(next(iter(keys.values())), {"cpus": 2, "gpus": 1, "origin": {"study": "s", "trial": "t1"}})]


def test_trial_scratch_is_deleted_on_error_and_a_killed_trials_is_swept(tmp_path, monkeypatch):
    import socket
    import subprocess
    import sys

    from resweep.stages.scratch import trial_scratch

    monkeypatch.setenv("RESWEEP_SCRATCH", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed = tmp_path / "trials" / f"t0-{socket.gethostname()}-{int(dead.stdout)}"
    (killed / "x").mkdir(parents=True)  # what a SIGKILLed trial process leaves
    other_host = tmp_path / "trials" / f"t9-elsewhere-{int(dead.stdout)}"
    other_host.mkdir()  # another host's (a shared scratch disk): not ours to judge
    with pytest.raises(RuntimeError), trial_scratch("t1") as path:
        (path / "f").write_text("x")
        assert not killed.exists()
        raise RuntimeError
    assert not path.exists() and other_host.exists()


@pytest.mark.slow
@pytest.mark.ray
def test_an_optuna_stage_made_in_a_trial_is_recorded_like_the_drivers(ray_local, tmp_path):
    """An Optuna knob changes the MAE encoder's pretraining: the driver makes the base config's
    encoder, each trial the one of its sampled value, with the key the driver gave it;
    artifacts.parquet and the trials' ``artifacts`` column name them all."""
    from resweep.stages.scratch import scratch_root
    from resweep.study import run_study
    from resweep.study.spec import study_from_dict

    base = tiny_config_dict(**{
        "task": {"kind": "denoise", "scale": 1, "noise_sigma": 25.0}, "model.name": "unet_tiny",
        "methods.mae_loss": {"enabled": True, "variant": "ctmae", "pretrain": {"arch": "tiny", "steps": 2, "crop": 32}},
        "train.iterations": 2, "train.log_every": 1, "eval.every": 2,
    })
    study = study_from_dict({
        "name": "in-trial",
        "base": base,
        "space": {"methods.mae_loss.pretrain.steps": {"type": "choice", "values": [1, 3]}},
        "seeds": [0],
        "search": {"algorithm": "optuna_tpe", "num_samples": 2, "seed": 0},
        "objectives": [{"metric": "loss.total", "mode": "min"}],
        "budget": {"max_concurrent": 1},
    })
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    trials = pq.read_table(study_dir / "trials.parquet").to_pylist()
    assert len(trials) == 2 and {t["status"] for t in trials} == {"finished"}
    rows = {r["key"]: r for r in pq.read_table(study_dir / "artifacts.parquet").to_pylist()}
    store = ArtifactStore(study_dir)
    assert set(rows) == set(store.list_keys())  # every artifact of the study has its row
    saved = json.loads((study_dir / "stage_keys.json").read_text())["keys"]
    assert set(rows) == set(saved.values())
    for trial in trials:
        key = json.loads(trial["artifacts"])["mae_loss.encoder"]
        row = rows[key]
        assert row["status"] == "produced" and row["kind"] == "mae_pretrain"
        assert json.loads(row["definition"])["steps"] == trial["param.methods.mae_loss.pretrain.steps"]
        marker = store.committed(key).marker
        assert marker["made_by"]["trial"] in {t["trial_id"] for t in trials}
        # its scratch folder went with it (the old layout kept <scratch>/<trial_id> for ever)
        assert not (scratch_root() / trial["trial_id"]).exists()
        assert not list((scratch_root() / "trials").glob(f"{trial['trial_id']}-*"))
    # the base config's encoder (steps 2) was made by the driver, before the trials
    base_rows = [r for r in rows.values() if json.loads(r["definition"])["steps"] == 2]
    assert len(base_rows) == 1 and "made_by" not in store.committed(base_rows[0]["key"]).marker


@pytest.mark.slow
@pytest.mark.ray
def test_a_resumed_driver_reuses_the_saved_keys_after_the_data_was_touched(ray_local, tmp_path):
    """What ``resweep resume`` does before restoring the Tuner: the saved keys name the same
    artifact, though the pretraining images' mtimes changed (computed again, the key differs)."""
    import numpy as np
    from PIL import Image

    from resweep.study import experiment
    from resweep.study.layout import StudyLayout
    from resweep.study.spec import study_from_dict

    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(images / f"{i}.png")
    pretrain = tiny_config_dict(**{"name": "pre", "train.iterations": 2, "eval.sets": [],
                                   "data.train": {"kind": "folder", "path": str(images)}})
    study = study_from_dict({"name": "keys", "seeds": [0],
                             "base": tiny_config_dict(**{"model.init_from": {"kind": "train", "experiment": pretrain}})})
    layout = StudyLayout(tmp_path / "study")
    layout.root.mkdir()
    first = experiment.prepare_study_stages(study, layout, str(layout.root))
    (key,) = first.values()
    keys_file = (layout.root / "stage_keys.json").read_bytes()
    store = ArtifactStore(layout.root)
    marker = (layout.root / "artifacts" / key / "COMMITTED.json").read_bytes()
    for path in images.iterdir():
        os.utime(path, ns=(10**9, 10**9))
    definition = ExperimentConfig.from_dict(study.trial_specs()[0].experiment).stages()["model.init_from"]
    assert stage_key(definition) != key  # a driver computing keys again would train another artifact
    assert experiment.prepare_study_stages(study, layout, str(layout.root)) == first
    assert (layout.root / "stage_keys.json").read_bytes() == keys_file
    assert store.list_keys() == [key]
    assert (layout.root / "artifacts" / key / "COMMITTED.json").read_bytes() == marker
    rows = pq.read_table(layout.root / "artifacts.parquet").to_pylist()
    assert [(r["key"], r["status"]) for r in rows] == [(key, "produced")]
