"""RCL's two stages in one real local study: the pretrained backbone is a `train` stage
(``model.init_from``) made once, and every fine-tuning trial (the proxy evaluation) starts from
that artifact's weights."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import torch

from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict

pytestmark = pytest.mark.ray

DENOISE = {"kind": "hetero_denoise", "scale": 1}
OBJECTIVE = "eval.demo-eval.psnr"


def _rcl_pretraining() -> dict:
    """Noisy-only RCL pretraining of unet_tiny; random ResNet-18 features are allowed (the tests
    have no ImageNet file), which the method records as not the paper's setting."""
    return tiny_config_dict(**{
        "name": "rcl-pretrain-tiny", "task": DENOISE, "model.name": "unet_tiny",
        "data.patch_size": 16, "data.batch_size": 4, "data.augment": False,
        "train.iterations": 3, "train.log_every": 1, "eval.sets": [],
        "methods.rcl": {"crop_size": 8, "crop_overlap": 0.5, "encoder": "resnet18", "encoder_layer": "layer1",
                        "allow_random_features": True},
    })


def test_rcl_backbone_is_pretrained_once_and_every_finetuning_trial_starts_from_it(ray_local, tmp_path):
    from resweep.stages import ArtifactStore

    stage = {"kind": "train", "experiment": _rcl_pretraining()}
    study = study_from_dict({
        "name": "rcl-proxy",
        "base": tiny_config_dict(**{
            "task": DENOISE,
            "model": {"name": "unet_tiny", "init_from": stage, "reinit_last_layer": True},
            "train.trainable": "last_layer", "train.iterations": 4, "train.log_every": 1,
            "train.checkpoint_every": 4, "eval.every": 2, "data.patch_size": 16, "data.batch_size": 2,
            "optim.lr": 1e-2,
        }),
        "variants": [  # two label counts (demo train images) x two seeds = four fine-tuning trials
            {"label": "labels_1", "overrides": {"data.train.max_images": 1}},
            {"label": "labels_2", "overrides": {"data.train.max_images": 2}},
        ],
        "seeds": [0, 1],
        "search": {"algorithm": "grid"},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
    })
    from resweep.study import run_study

    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)

    # the backbone was made exactly once, before the trials
    (row,) = pq.read_table(study_dir / "artifacts.parquet").to_pylist()
    assert row["kind"] == "train" and row["status"] == "produced"
    assert row["metric.iteration"] == 3
    trials = pq.read_table(study_dir / "trials.parquet").to_pylist()
    assert len(trials) == 4 and {t["status"] for t in trials} == {"finished"}
    assert {json.loads(t["artifacts"])["model.init_from"] for t in trials} == {row["key"]}
    store = ArtifactStore(study_dir)  # the study's storage (a local folder here)
    assert store.list_keys() == [row["key"]]
    weights = torch.load(store.fetch(row["key"], tmp_path / "scratch") / "weights.pt", weights_only=True)

    # each finished trial's checkpoint: every frozen parameter is the artifact's, bit for bit;
    # the last layer was re-initialised and trained, so it is not
    checkpoints = sorted(study_dir.rglob("checkpoint.pt"))
    assert len(checkpoints) == 4  # one per trial (checkpoint_every = the last iteration)
    heads = []
    for path in checkpoints:
        state = torch.load(path, weights_only=True)
        assert state["iteration"] == 4
        model = {k.removeprefix("module."): v for k, v in state["model"].items()}
        assert set(model) == set(weights)
        for name, value in weights.items():
            if name.startswith("last_layer."):
                assert not torch.equal(model[name], value), f"{path}: {name} kept the pretrained head"
            else:
                assert torch.equal(model[name], value), f"{path}: {name} is not the artifact's"
        heads.append(model["last_layer.weight"])
    # the seeds and label counts fine-tuned different heads on the same backbone
    assert not all(torch.equal(heads[0], h) for h in heads[1:])

    # the pretraining artifact carries RCL's Fig. 2 (gaps before/after), and the study's
    # dashboard draws it, found through artifacts.parquet
    assert {"rcl.distance_gaps.share_above_0.start", "rcl.distance_gaps.share_above_0.end"} <= {
        k.removeprefix("metric.") for k in row}
    from resweep.analysis import build_report

    page = build_report(study_dir, out_dir=tmp_path / "report").index_path.read_text()
    section = page.split('<section id="diagnostics">', 1)[1].split("</section>", 1)[0]
    assert 'id="diagnostic-0"' in section and row["key"] in section and "labels_1, labels_2" in section
