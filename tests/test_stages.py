"""Stages without Ray: keys, the artifact store's commit protocol, killed producers, the
``train`` kind and ``model.init_from`` from a stage, definitions' validation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from resweep.config import ExperimentConfig
from resweep.errors import ConfigError
from resweep.stages import (
    PRODUCED,
    REUSED,
    ArtifactStore,
    StageDefinition,
    parse_stage,
    plan,
    prepare_local,
    produce,
    register_stage,
    stage_key,
)
from resweep.stages.store import COMMIT_FILE

from conftest import tiny_config_dict

CALLS: list[str] = []


class CountDefinition(StageDefinition):
    """A test kind: writes ``values.json`` with ``n`` numbers; fails when ``fail`` is set."""

    kind: str = "test_count"
    n: int
    fail: bool = False


@register_stage("test_count", CountDefinition)
def _produce_count(definition: CountDefinition, out_dir: Path, context) -> dict[str, float]:
    CALLS.append(definition.kind)
    (out_dir / "values.json").write_text(json.dumps(list(range(definition.n))))
    if definition.fail:
        raise RuntimeError("producer killed half-way")
    return {"total": float(sum(range(definition.n)))}


def test_key_is_a_content_hash_of_the_definition() -> None:
    a, b = CountDefinition(n=3), CountDefinition(n=4)
    assert stage_key(a) == stage_key(CountDefinition(n=3))
    assert stage_key(a) != stage_key(b)
    assert stage_key(a).startswith("test_count-")


def test_train_key_ignores_names_and_logging_but_not_knobs_or_data(tmp_path: Path) -> None:
    base = tiny_config_dict()
    key = stage_key(parse_stage({"kind": "train", "experiment": base}))
    renamed = {**base, "name": "other", "train": {**base["train"], "log_every": 1}}
    assert stage_key(parse_stage({"kind": "train", "experiment": renamed})) == key
    faster = {**base, "optim": {**base["optim"], "lr": 2e-3}}
    assert stage_key(parse_stage({"kind": "train", "experiment": faster})) != key
    # the data it names: a folder whose file changes is a new key
    folder = tmp_path / "imgs"
    folder.mkdir()
    import numpy as np
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(folder / "a.png")
    on_folder = {**base, "data": {**base["data"], "train": {"kind": "folder", "path": str(folder)}}}
    first = stage_key(parse_stage({"kind": "train", "experiment": on_folder}))
    Image.fromarray(np.full((32, 32, 3), 9, np.uint8)).save(folder / "a.png")
    os.utime(folder / "a.png", ns=(1, 1))
    assert stage_key(parse_stage({"kind": "train", "experiment": on_folder})) != first


def test_produced_once_then_reused_and_committed_by_a_marker(tmp_path: Path) -> None:
    CALLS.clear()
    (step,), _ = plan({"x": CountDefinition(n=5)})
    first = produce(step, str(tmp_path))
    again = produce(step, str(tmp_path))
    assert (first.status, again.status) == (PRODUCED, REUSED)
    assert CALLS == ["test_count"]
    assert first.metrics == again.metrics == {"total": 10.0}
    store = ArtifactStore(tmp_path)
    folder = store.fetch(step.key, tmp_path / "scratch")
    assert json.loads((folder / "values.json").read_text()) == [0, 1, 2, 3, 4]
    marker = json.loads((tmp_path / "artifacts" / step.key / COMMIT_FILE).read_text())
    assert folder.name == marker["attempt"]


def test_a_killed_producer_leaves_nothing_readable_and_is_redone(tmp_path: Path) -> None:
    CALLS.clear()
    (broken,), _ = plan({"x": CountDefinition(n=5, fail=True)})
    with pytest.raises(RuntimeError, match="half-way"):
        produce(broken, str(tmp_path))
    store = ArtifactStore(tmp_path)
    assert store.committed(broken.key) is None
    with pytest.raises(FileNotFoundError, match="not committed"):
        store.fetch(broken.key, tmp_path / "scratch")
    # a producer killed after uploading (before its marker): an attempt folder nobody reads
    (step,), _ = plan({"x": CountDefinition(n=2)})
    stale = tmp_path / "artifacts" / step.key / "attempt-killed"
    stale.mkdir(parents=True)
    (stale / "values.json").write_text("[99]")
    assert store.committed(step.key) is None
    record = produce(step, str(tmp_path))
    assert record.status == PRODUCED
    folder = store.fetch(step.key, tmp_path / "scratch")
    assert json.loads((folder / "values.json").read_text()) == [0, 1]
    assert not stale.exists()  # cleaned up under the key's lock


def test_stage_definitions_are_strict_and_name_the_field() -> None:
    with pytest.raises(ValueError, match="kind.*unknown stage kind 'trian'.*'train'"):
        parse_stage({"kind": "trian", "experiment": {}})
    with pytest.raises(ValueError, match="n: .*integer"):
        parse_stage({"kind": "test_count", "n": "many"})
    with pytest.raises(ValueError, match="colour"):
        parse_stage({"kind": "test_count", "n": 1, "colour": "red"})
    with pytest.raises(ConfigError, match="model.init_from") as info:
        ExperimentConfig.from_dict({"model": {"init_from": {"kind": "train", "experiment": {"optim": {"lr": -1}}}}})
    assert "optim.lr" in str(info.value)
    # a definition round-trips through YAML
    import yaml

    definition = parse_stage({"kind": "train", "experiment": tiny_config_dict()})
    assert parse_stage(yaml.safe_load(yaml.safe_dump(definition.model_dump(mode="json")))) == definition


def test_model_init_from_a_train_stage(tmp_path: Path) -> None:
    """`resweep train` with a config that declares a stage: the stage is made first (once),
    and the run starts from its weights."""
    from resweep.engine.trainer import Trainer

    pretrain = tiny_config_dict(**{"train.iterations": 3, "train.device": "cpu"})
    cfg = ExperimentConfig.from_dict(
        tiny_config_dict(**{"model.init_from": {"kind": "train", "experiment": pretrain}, "train.device": "cpu",
                            "train.seed": 5})
    )
    assert list(cfg.stages()) == ["model.init_from"]
    trainer = Trainer(cfg, cache_dir=tmp_path, log=lambda _m: None)
    assert [r.status for r in trainer.artifact_records] == [PRODUCED]
    weights = torch.load(trainer.artifacts["model.init_from"] / "weights.pt", weights_only=True)
    for name, value in trainer.model.state_dict().items():
        assert torch.equal(value, weights[name]), name
    metrics = json.loads((trainer.artifacts["model.init_from"] / "metrics.json").read_text())
    assert metrics["iteration"] == 3 and metrics["status"] == "finished"
    second = Trainer(cfg.with_overrides({"optim.lr": 1e-4}), cache_dir=tmp_path, log=lambda _m: None)
    assert [r.status for r in second.artifact_records] == [REUSED]
    artifacts, records = prepare_local(cfg, tmp_path)
    assert artifacts == trainer.artifacts and records[0].status == REUSED


def test_a_train_stages_caveats_are_kept_with_its_artifact(tmp_path: Path, monkeypatch) -> None:
    """A stage trained with random feature networks says so in its commit marker and in the
    record behind artifacts.parquet, when made and when reused; a stage without caveats has none."""
    from resweep.stages.on_ray import write_artifacts_table

    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights_here"))
    noted = tiny_config_dict(**{"train.iterations": 2, "train.device": "cpu", "eval.sets": [],
                                "methods.perceptual": {"allow_random_features": True, "feature_layers": ["relu1_2"]}})
    plain = tiny_config_dict(**{"train.iterations": 2, "train.device": "cpu", "eval.sets": []})
    records = {}
    for name, experiment in (("noted", noted), ("plain", plain)):
        step = plan({"m": parse_stage({"kind": "train", "experiment": experiment})})[0][0]
        made, reused = produce(step, str(tmp_path / "store")), produce(step, str(tmp_path / "store"))
        assert (made.status, reused.status) == (PRODUCED, REUSED)
        assert made.notes == reused.notes
        records[name] = made
    assert "perceptual:" in records["noted"].notes and "random" in records["noted"].notes
    assert records["plain"].notes is None
    marker = ArtifactStore(str(tmp_path / "store")).committed(records["noted"].key).marker
    assert marker["notes"] == [records["noted"].notes]
    write_artifacts_table(tmp_path, list(records.values()))
    import pyarrow.parquet as pq

    rows = {r["key"]: r for r in pq.read_table(tmp_path / "artifacts.parquet").to_pylist()}
    assert rows[records["noted"].key]["notes"] == records["noted"].notes
