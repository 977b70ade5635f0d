"""Presets mae_table2 / mae_table3 (x2, x4) / mae_table5 (video) / mae_table7: load, rows match the
paper's, stages."""

from __future__ import annotations

import pytest
import torch

PRESETS = ["mae_table2", "mae_table3", "mae_table3_x4", "mae_table5", "mae_table7"]


@pytest.fixture
def no_kmae_file(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("RESWEEP_MAE_WEIGHTS", raising=False)
    monkeypatch.delenv("RESWEEP_MAE_VIDEO_WEIGHTS", raising=False)
    yield
    torch.hub.set_dir(old)


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("paper_schedule", [False, True])
def test_preset_rows_and_stages(name, paper_schedule, no_kmae_file):
    from resweep.presets import load_preset

    study = load_preset(name, paper_schedule=paper_schedule)
    labels = [v.label for v in study.variants]
    assert study.paper is not None and list(study.paper.values) == labels
    assert study.baseline == "Original" and study.seeds == [0, 1, 2]
    encoders = {}
    for trial in study.trial_configs():
        exp = study.experiment_for(trial["params"], trial["seed"])
        mae = exp.methods.get("mae_loss")
        stages = mae.stages(exp) if mae is not None else {}
        label = trial["label"]
        if label in ("Original", "+VGG"):
            assert stages == {} and (mae is None or not mae.enabled)
            continue
        assert mae.enabled and mae.weight == 1.0
        assert mae.patch == label.startswith("+P_")
        if label == "+KMAE" and paper_schedule:
            assert stages == {}  # the ImageNet file is required: no stand-in
            continue
        stage = stages["encoder"]
        video = exp.task.kind == "video_denoise"
        if video:
            assert stage.kind == "mae_video_pretrain" and mae.variant.endswith("_video")
        else:
            assert stage.variant == ("conv" if "CCMAE" in label else "vit")
        if label == "+KMAE":
            assert stage.data["kind"] == ("video_demo" if video else "demo")  # out-of-task stand-in
        else:
            assert stage.data == exp.data.train.model_dump(mode="json")
        encoders.setdefault(label.replace("+P_", "+"), set()).add(stage.model_dump_json())
    # one pretraining definition per loss network, shared by seeds and by whole/patch rows
    assert encoders and all(len(defs) == 1 for defs in encoders.values())


def test_table3_measures_niqe_and_has_the_vgg_row():
    from resweep.presets import load_preset

    for name, scale in (("mae_table3", 2), ("mae_table3_x4", 4)):
        study = load_preset(name)
        assert study.base.task.scale == scale
        assert all(s.niqe for s in study.base.eval.sets)
        vgg = study.experiment_for(next(t for t in study.trial_configs() if t["label"] == "+VGG")["params"], 0)
        assert vgg.methods["perceptual"].enabled and not vgg.methods["perceptual"].allow_random_features


def test_table5_trains_and_evaluates_on_different_clips():
    from resweep.presets import load_preset

    study = load_preset("mae_table5")
    base = study.base
    assert base.model.name == "fastdvdnet" and base.task.video.target == "centre"
    train = str(base.data.train.path)
    evals = [str(s.path) for s in base.eval.sets]
    assert train.endswith("bikes") and evals == [e for e in evals if e.endswith("carphone")] and evals
    assert study.primary.metric == "eval.carphone.psnr"
