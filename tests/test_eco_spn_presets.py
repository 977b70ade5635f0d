"""What the ECO (and SPN x4) presets run, in both budgets and above all under
``--paper-schedule`` (issue 21): a teacher stronger than the vanilla arm, the paper's data and
reported set, an α that reaches pure vanilla training before the end, the noise-free row of
Fig. 4, x3/x4 rows started from their arm's x2 model (a train stage), and the weight loading
that start needs."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from resweep.config import ExperimentConfig
from resweep.engine.finetune import load_initial_weights
from resweep.errors import ConfigError
from resweep.methods.eco import alpha_at
from resweep.models import create_model
from resweep.presets import list_presets, load_preset
from resweep.stages import parse_stage

ECO_PRESETS = [name for name in list_presets() if name.startswith("eco_")]
DIV2K = "DIV2K/DIV2K_train_HR"  # under $RESWEEP_DATA (expanded when it is set)


def rows(name: str, paper_schedule: bool) -> tuple[Any, dict[str, ExperimentConfig]]:
    """The study and one config per row (seed 0; the grid point's first batch size for Fig. 4)."""
    study = load_preset(name, paper_schedule=paper_schedule)
    out: dict[str, ExperimentConfig] = {}
    for trial in study.trial_configs():
        out.setdefault(trial["label"], study.experiment_for(trial["params"], trial["seed"]))
    return study, out


def n_params(config: dict[str, Any]) -> int:
    model = config.get("model", {})
    scale = config.get("task", {}).get("scale", 2)
    net = create_model(model.get("name", "edsr_baseline"), scale=scale, **model.get("kwargs", {}))
    return sum(p.numel() for p in net.parameters())


def test_every_eco_preset_is_covered() -> None:
    assert {"eco_table1", "eco_table1_rcan", "eco_table1_rcan_x4", "eco_table2", "eco_fig3", "eco_fig4"} <= set(
        ECO_PRESETS
    )


@pytest.mark.parametrize("name", ECO_PRESETS)
@pytest.mark.parametrize("paper_schedule", [False, True])
def test_teacher_is_stronger_than_the_vanilla_arm(name: str, paper_schedule: bool) -> None:
    """ECO must not distil from its own baseline: the teacher trains longer than the student or
    is a larger network, with a seed no trial uses."""
    study, by_label = rows(name, paper_schedule)
    seeds = set(study.seeds)
    for label, config in by_label.items():
        eco = config.methods["eco"]
        if not eco.enabled:
            continue
        teacher = eco.teacher.train
        assert teacher, f"{name}/{label}: the presets train their teacher"
        teacher_cfg = ExperimentConfig.from_dict(teacher)
        longer = teacher_cfg.train.iterations >= 2 * config.train.iterations
        larger = n_params(teacher) > n_params(config.to_dict())
        assert longer or larger, f"{name}/{label}: teacher not stronger than the student"
        assert teacher_cfg.train.seed not in seeds, f"{name}/{label}: teacher shares a trial seed"


@pytest.mark.parametrize("name", ECO_PRESETS)
def test_paper_schedule_trains_on_div2k_and_reports_set5(name: str) -> None:
    """Under --paper-schedule every run (trials, teachers, x2 stages) trains on DIV2K, and the
    objective is the Set5 PSNR-Y the paper's values are, in both budgets."""
    for paper_schedule in (False, True):
        study, by_label = rows(name, paper_schedule)
        assert study.primary.metric == "eval.Set5.psnr_y"
        for label, config in by_label.items():
            assert "Set5" in [s.display_name for s in config.eval.sets], label
            if not paper_schedule:
                continue
            runs = [config.to_dict()]
            if config.methods["eco"].enabled:
                runs.append(config.methods["eco"].teacher.train)
            if isinstance(config.model.init_from, dict):
                stage = config.model.init_from["experiment"]
                runs.append(stage)
                teacher = stage.get("methods", {}).get("eco", {}).get("teacher", {}).get("train")
                if teacher:
                    runs.append(teacher)
            for run in runs:
                train = run["data"]["train"]
                assert train["kind"] == "folder" and str(train["path"]).endswith(DIV2K), (name, label, train)
            sets = {s.display_name: s for s in config.eval.sets}
            assert str(sets["Set5"].path).endswith("benchmark/Set5/HR")


@pytest.mark.parametrize("name", ECO_PRESETS)
def test_alpha_reaches_vanilla_training_before_the_end(name: str) -> None:
    """The paper switches to the original objective once converged: α = 1 (vanilla pairs) for at
    least the last fifth of every ECO row's training; the linear ramp is an ablation row only."""
    _, by_label = rows(name, True)
    for label, config in by_label.items():
        eco = config.methods["eco"]
        if not eco.enabled or eco.mode != "eco":
            continue
        total = config.train.iterations

        def alpha(i: int, eco: Any = eco, total: int = total) -> float:
            return alpha_at(
                i, total, shape=eco.schedule, alpha_start=eco.alpha_start,
                ramp_fraction=eco.ramp_fraction, step_count=eco.step_count,
            )

        first_one = next(i for i in range(0, total + 1, max(1, total // 1000)) if alpha(i) >= 1.0)
        if label.endswith("-linear"):
            assert first_one >= total * 0.99 and alpha(total // 2) == pytest.approx(0.5)
        else:
            assert first_one <= 0.8 * total, f"{name}/{label}: α reaches 1 at {first_one}/{total}"
            assert alpha(0) == 0.0  # starts on the noise-free pairs
    if name == "eco_table1":
        assert by_label["eco-x2-linear"].methods["eco"].schedule == "linear"


def test_fig4_has_the_noise_free_row_at_every_batch_size() -> None:
    for paper_schedule in (False, True):
        study = load_preset("eco_fig4", paper_schedule=paper_schedule)
        batches: dict[str, set[int]] = {}
        for trial in study.trial_configs():
            config = study.experiment_for(trial["params"], trial["seed"])
            eco = config.methods["eco"]
            mode = eco.mode if eco.enabled else "vanilla"
            batches.setdefault(mode, set()).add(config.data.batch_size)
        assert batches == {m: {2, 4, 8, 16} for m in ("vanilla", "eco", "noise_free")}


def _weights_definition(config: dict[str, Any]) -> dict[str, Any]:
    """A train stage's key definition, less method sections that are switched off."""
    definition = parse_stage({"kind": "train", "experiment": config}).key_definition()
    methods = definition["experiment"].get("methods", {})
    definition["experiment"]["methods"] = {k: v for k, v in methods.items() if v.get("enabled", True)}
    return definition


@pytest.mark.parametrize("name", ["eco_table1", "eco_table1_rcan"])
@pytest.mark.parametrize("paper_schedule", [False, True])
def test_x3_x4_rows_start_from_their_arms_x2_model(name: str, paper_schedule: bool) -> None:
    """The x2 stage of each x3/x4 row trains exactly the x2 row of the same arm (so under the
    paper schedule it has the paper's recipe too), and its upsampler is allowed to be new."""
    _, by_label = rows(name, paper_schedule)
    prefix = "-rcan" if name == "eco_table1_rcan" else ""
    for arm in ("vanilla", "eco"):
        x2 = by_label[f"{arm}{prefix}-x2"]
        assert x2.model.init_from is None
        for scale in (3, 4):
            label = f"{arm}{prefix}-x{scale}"
            if label not in by_label:
                continue
            row = by_label[label]
            assert row.task.scale == scale and row.model.init_new_head
            stage = row.model.init_from
            assert isinstance(stage, dict) and stage["kind"] == "train"
            assert _weights_definition(stage["experiment"]) == _weights_definition(x2.to_dict())


def test_rcan_x4_starts_from_an_x2_rcan_of_its_recipe() -> None:
    _, by_label = rows("eco_table1_rcan_x4", True)
    for row in by_label.values():
        stage = row.model.init_from["experiment"]
        assert stage["task"]["scale"] == 2 and stage["model"]["name"] == "rcan"
        assert stage["train"]["iterations"] == row.train.iterations == 1_000_000
        assert bool(stage.get("methods", {}).get("eco", {}).get("enabled")) == row.methods["eco"].enabled


@pytest.mark.parametrize("model", ["edsr_tiny", "rcan_tiny"])
def test_an_x2_model_initialises_x3_and_x4_with_a_new_upsampler(model: str) -> None:
    torch.manual_seed(0)
    x2 = create_model(model, scale=2).state_dict()
    for scale in (3, 4):
        torch.manual_seed(1)
        net = create_model(model, scale=scale)
        fresh = {k: v.clone() for k, v in net.state_dict().items()}
        with pytest.raises(ConfigError, match="shapes that differ|missing"):
            load_initial_weights(net, x2, allow_new_head=False)
        new = load_initial_weights(net, x2, allow_new_head=True)
        state = net.state_dict()
        for key, value in state.items():
            if key.startswith("upsample.") and (key not in x2 or x2[key].shape != value.shape):
                assert key in new and torch.equal(value, fresh[key])  # the new head stays fresh
            else:
                assert torch.equal(value, x2[key]), key  # body, last layer (and x4's first x2 stage)
        if scale == 4:
            assert torch.equal(state["upsample.0.weight"], x2["upsample.0.weight"])
        assert new and all(k.startswith("upsample.") for k in new)


def test_other_mismatched_weights_are_still_errors() -> None:
    x2 = create_model("edsr_tiny", scale=2).state_dict()
    wider = create_model("edsr_tiny", scale=3, n_feats=24)
    with pytest.raises(ConfigError, match="shapes that differ"):
        load_initial_weights(wider, x2, allow_new_head=True)


@pytest.mark.parametrize("name", ["spn_table7", "spn_table8", "spn_table9"])
def test_spn_x4_rows_start_from_an_edsr_light_x2_stage_under_paper_schedule(name: str) -> None:
    """BasicSR (the authors' code base) starts EDSR-light x4 from the x2 model: under the paper
    schedule every row starts from one x2 stage with plain L1 and the rows' own recipe."""
    _, reduced = rows(name, False)
    assert all(c.model.init_from is None for c in reduced.values())
    _, paper = rows(name, True)
    stages = []
    for row in paper.values():
        assert row.task.scale == 4 and row.model.init_new_head
        stage = parse_stage(row.model.init_from)
        x2 = stage.config()
        assert x2.task.scale == 2 and x2.model.name == row.model.name == "edsr_baseline"
        assert not any(m.enabled for m in x2.methods.values())  # plain L1, no negative term
        assert x2.loss.pixel == row.loss.pixel == "l1"
        assert x2.train.iterations == row.train.iterations == 300_000
        assert x2.schedule.milestones == row.schedule.milestones and x2.optim.lr == row.optim.lr
        assert x2.data.batch_size == row.data.batch_size and x2.data.patch_size == row.data.patch_size
        assert str(x2.data.train.path).endswith(DIV2K) and not x2.train.amp
        stages.append(stage.key_definition())
    assert all(s == stages[0] for s in stages)  # one stage, made once for every row


@pytest.mark.parametrize("paper_schedule", [False, True])
def test_spn_table1_x4_rows_start_from_the_plain_x2_row(paper_schedule: bool) -> None:
    _, by_label = rows("spn_table1_edsr", paper_schedule)
    x2 = by_label["EDSR-light x2"]
    assert x2.model.init_from is None and by_label["EDSR-light x2 +SPN"].model.init_from is None
    for label in ("EDSR-light x4", "EDSR-light x4 +SPN"):
        row = by_label[label]
        assert row.task.scale == 4 and row.model.init_new_head
        assert _weights_definition(row.model.init_from["experiment"]) == _weights_definition(x2.to_dict())
