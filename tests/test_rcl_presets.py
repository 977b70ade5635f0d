"""The RCL presets load, name the paper's rows, and set up the proxy protocol they claim."""

from __future__ import annotations

import pytest

from resweep.presets import load_preset

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


def test_proxy_protocol_of_each_row():
    t1 = load_preset("rcl_table1")
    for trial in t1.trial_configs():
        exp = t1.experiment_for(trial["params"], trial["seed"])
        if trial["label"] == "oracle":
            assert exp.train.trainable == "all" and exp.model.init_from is None
        else:
            assert exp.train.trainable == "last_layer" and exp.model.reinit_last_layer
            assert trial["label"] in str(exp.model.init_from)
    t2 = load_preset("rcl_table2")
    kinds = {t2.experiment_for(t["params"], 0).task.kind for t in t2.trial_configs()}
    assert kinds == {"sr", "hetero_denoise_sr"}
    t3 = load_preset("rcl_table3")
    for trial in t3.trial_configs():
        exp = t3.experiment_for(trial["params"], trial["seed"])
        assert (exp.model.init_from is not None) == trial["label"].startswith("rcl_sl")
    pre = load_preset("rcl_pretrain")
    methods = {
        t["label"]: sorted(pre.experiment_for(t["params"], 0).enabled_methods) for t in pre.trial_configs()
    }
    assert methods == {"n2n": ["noise2noise"], "n2s": ["noise2self"], "rcl_bd": ["rcl"],
                       "rcl_mmd": ["rcl"], "rcl_emd": ["rcl"], "sl_den": []}
