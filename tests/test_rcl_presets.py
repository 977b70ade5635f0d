"""The RCL presets load, name the paper's rows, and set up the proxy protocol they claim."""

from __future__ import annotations

import json

import pytest

from resweep.presets import load_preset
from resweep.stages import parse_stage

TABLES = ["rcl_table1", "rcl_table2", "rcl_table3"]


@pytest.mark.parametrize("name", ["rcl_pretrain", *TABLES])
def test_presets_load_with_and_without_the_paper_schedule(name):
    short = load_preset(name)
    long = load_preset(name, paper_schedule=True)
    assert long.base.train.iterations > short.base.train.iterations
    assert long.base.data.batch_size == 64  # the paper's batch


@pytest.mark.parametrize("name", TABLES)
def test_every_row_has_the_papers_number_beside_it(name):
    study = load_preset(name)
    labels = {v.label for v in study.variants}
    assert study.paper is not None and set(study.paper.values) == labels
    assert len(study.seeds) >= 3


def _backbone(stage) -> dict:
    """What defines a pretrained backbone's weights: the stage's key definition (no name, eval
    or logging) with switched-off methods dropped (``enabled: false`` trains nothing)."""
    experiment = stage.key_definition()["experiment"]
    experiment["methods"] = {k: v for k, v in experiment.get("methods", {}).items() if v["enabled"]}
    return experiment


def _pretraining_rows(paper_schedule: bool = False) -> dict[str, dict]:
    """rcl_pretrain.yaml's rows, each as the `train` stage it would be."""
    pre = load_preset("rcl_pretrain", paper_schedule=paper_schedule)
    rows = {}
    for trial in pre.trial_configs():
        exp = pre.experiment_for(trial["params"], trial["seed"])
        rows[trial["label"]] = _backbone(parse_stage({"kind": "train", "experiment": exp.to_dict()}))
    return rows


@pytest.mark.parametrize("paper_schedule", [False, True])
def test_each_row_pretrains_its_backbone_as_a_train_stage(paper_schedule):
    """Every fine-tuning row names the rcl_pretrain row of its method as a built-in `train`
    stage, with that row's experiment exactly; rows of one method share one stage. With
    --paper-schedule the stages follow rcl_pretrain's paper schedule too."""
    rows = _pretraining_rows(paper_schedule)
    assert {label: sorted(e["methods"]) for label, e in rows.items()} == {
        "n2n": ["noise2noise"], "n2s": ["noise2self"], "rcl_bd": ["rcl"], "rcl_mmd": ["rcl"],
        "rcl_emd": ["rcl"], "rcl_consistency_only": ["rcl"], "sl_den": []}
    assert {label: e["methods"]["rcl"]["distance"] for label, e in rows.items() if "rcl" in e["methods"]} == {
        "rcl_bd": "bhattacharyya", "rcl_mmd": "mmd", "rcl_emd": "emd", "rcl_consistency_only": "emd"}
    # α = 0 is the only difference between the consistency-only row and RCL-EMD
    assert rows["rcl_consistency_only"]["methods"]["rcl"]["alpha"] == 0.0
    assert {**rows["rcl_consistency_only"]["methods"]["rcl"], "alpha": 1e-3} == rows["rcl_emd"]["methods"]["rcl"]
    # seed: trial: one backbone per method and fine-tuning seed (five seeds)
    expected_stages = {"rcl_table1": 6 * 5, "rcl_table2": 6 * 5, "rcl_table3": 1 * 5}
    for name in TABLES:
        study = load_preset(name, paper_schedule=paper_schedule)
        keys = set()
        for trial in study.trial_configs():
            exp = study.experiment_for(trial["params"], trial["seed"])
            label = trial["label"]
            stages = exp.stages()
            if label.endswith("oracle") or label.startswith("sl_"):
                assert "model.init_from" not in stages, label
                continue
            stage = stages["model.init_from"]
            assert stage.kind == "train" and stage.config().task.scale == 1
            row = "rcl_emd" if name == "rcl_table3" else label.split("_", 1)[1] if name == "rcl_table2" else label
            seeded = dict(rows[row], train={**rows[row]["train"], "seed": trial["seed"]})
            assert _backbone(stage) == seeded, f"{name} {label}"
            keys.add(json.dumps(stage.key_definition(), sort_keys=True))
        assert len(keys) == expected_stages[name], name


@pytest.mark.parametrize("name", TABLES)
def test_paper_schedule_changes_every_pretraining_stage_and_its_key(name):
    """--paper-schedule reaches model.init_from: each stage's definition (so its artifact key)
    changes, to the paper's batch 64 and crops of 128 px; without the flag it does not."""
    from resweep.stages.base import definition_digest

    def stages(study) -> dict[str, object]:
        out = {}
        for trial in study.trial_configs():
            stage = study.experiment_for(trial["params"], trial["seed"]).stages().get("model.init_from")
            if stage is not None:
                out[trial["label"]] = stage
        return out

    short, again, long = stages(load_preset(name)), stages(load_preset(name)), stages(load_preset(name, paper_schedule=True))
    assert short and set(short) == set(long)
    for label, stage in short.items():
        assert definition_digest(again[label]) == definition_digest(stage)
        assert definition_digest(long[label]) != definition_digest(stage), label
        cfg = long[label].config()
        assert cfg.data.batch_size == 64 and cfg.train.iterations > stage.config().train.iterations
        if cfg.methods.get("rcl") is not None and cfg.methods["rcl"].enabled:
            assert cfg.methods["rcl"].crop_size >= 128 and cfg.data.patch_size >= 192


def test_proxy_protocol_of_each_row():
    t1 = load_preset("rcl_table1")
    for trial in t1.trial_configs():
        exp = t1.experiment_for(trial["params"], trial["seed"])
        if trial["label"] == "oracle":
            assert exp.train.trainable == "all" and exp.model.init_from is None
        else:
            assert exp.train.trainable == "last_layer" and exp.model.reinit_last_layer
    t2 = load_preset("rcl_table2")
    kinds = {t2.experiment_for(t["params"], 0).task.kind for t in t2.trial_configs()}
    assert kinds == {"sr", "hetero_denoise_sr"}
    for trial in t2.trial_configs():
        exp = t2.experiment_for(trial["params"], 0)
        assert exp.task.scale == 2 and exp.model.init_new_head
    t3 = load_preset("rcl_table3")
    for trial in t3.trial_configs():
        exp = t3.experiment_for(trial["params"], trial["seed"])
        assert (exp.model.init_from is not None) == trial["label"].startswith("rcl_sl")


@pytest.mark.parametrize("paper_schedule", [False, True])
def test_rcl_table3_step_matched_sl_rows_add_the_pretraining_steps(tmp_path, paper_schedule):
    """The commented-out sl_*_matched rows of rcl_table3, once uncommented, load and give SL the
    pretraining's steps on top of the fine-tuning's (the header's compute note)."""
    from resweep.presets import preset_path
    from resweep.study.spec import load_study

    text = preset_path("rcl_table3").read_text()
    matched = [line for line in text.splitlines() if line.startswith("  # - {label: sl_")]
    assert len(matched) == 3
    for line in matched:
        text = text.replace(line, line.replace("  # - ", "  - ", 1))
    (tmp_path / "t3.yaml").write_text(text)
    study = load_study(tmp_path / "t3.yaml", paper_schedule=paper_schedule)
    configs = {t["label"]: study.experiment_for(t["params"], 0) for t in study.trial_configs()}
    stage = configs["rcl_sl_10"].stages()["model.init_from"].config()
    for labels in ("10", "100", "all"):
        sl, matched_sl = configs[f"sl_{labels}"], configs[f"sl_{labels}_matched"]
        assert matched_sl.data.train.max_images == sl.data.train.max_images
        # the rows' own 7000; under the paper schedule their own paper_schedule's 120000
        assert matched_sl.train.iterations == stage.train.iterations + sl.train.iterations
