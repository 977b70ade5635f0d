"""The main job: its preset is the design the README describes, and `run_demo` ends with the
ablation table (bicubic as its own row, Δ with paired CIs, the findings in words) and the
dashboard path. The end-to-end run uses the real preset shrunk to a few steps (the full demo
takes minutes; its measured table is in the README)."""

from __future__ import annotations

import pytest

from resweep.presets import load_preset


def test_demo_preset_is_the_documented_design():
    study = load_preset("demo")
    base = study.base
    assert base.model.name == "sr_residual_tiny" and base.task.kind == "sr" and base.task.scale == 2
    assert base.data.train.kind == "demo" and [s.kind for s in base.eval.sets] == ["demo"]
    assert base.eval.save_images  # the dashboard's visual comparison has pixels to show
    labels = [v.label for v in study.variants]
    assert study.baseline == labels[0] == "vanilla"
    assert len(study.seeds) >= 2  # paired CIs need more than one seed per row
    configs = {v.label: base.with_overrides(v.overrides) for v in study.variants}
    assert configs["lr ÷10"].optim.lr == pytest.approx(base.optim.lr / 10)
    assert configs["L2 loss"].loss.pixel == "l2" and configs["vanilla"] == base


@pytest.mark.ray
def test_run_demo_ends_with_the_table_and_the_dashboard(ray_local, tmp_path, monkeypatch, capsys):
    import resweep.study.demo as demo

    study = load_preset("demo")
    small = study.model_copy(update={
        "base": study.base.with_overrides({"train.iterations": 6, "eval.every": 3, "train.log_every": 3,
                                           "eval.max_side": 48, "data.patch_size": 12, "data.batch_size": 4}),
        "seeds": [0],  # 3 trials; pairs are then the 3 photographs
    })
    monkeypatch.setattr(demo, "load_preset", lambda name: small)
    study_dir = demo.run_demo(tmp_path / "demo", quiet=True)
    out = capsys.readouterr().out
    table = out[out.index("Ablation: demo"):]
    lines = table.splitlines()
    assert lines[3].startswith("bicubic (no learning)")  # the reference first, then the rows
    assert [line.split()[0] for line in lines[4:7]] == ["vanilla", "lr", "L2"]
    # the findings in words: whether training beats bicubic, and effects or a tie
    assert "the baseline row 'vanilla'" in table and "bicubic (no learning)" in table
    assert ("every row ties" in table) or ("effects whose 95% paired CI excludes 0" in table)
    assert f"dashboard: {study_dir / 'report' / 'index.html'}" in out
    assert (study_dir / "report" / "index.html").is_file()
    assert "demo finished: study" in out
