"""Fidelity to the authors' code (issue 11): post-ReLU VGG taps, a real Lamb, and collapse
seen in evaluation. Each test compares against an independent computation (torchvision's own
module list, a float64 LAMB); the fp32 SPN feature path under autocast is tested in
test_loss_precision.py."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from resweep.config import ExperimentConfig, OptimConfig
from resweep.engine.optim import build_optimizer
from resweep.engine.trainer import Trainer
from resweep.losses.feature_nets import VGGFeatures, vgg_layer_names
from resweep.methods.spn import SPNConfig

from conftest import CapturingReporter, tiny_config_dict

torch.set_num_threads(1)


# --------------------------------------------------------------------------- (1) layer names
def _torchvision_vgg16_features() -> nn.Sequential:
    from torchvision.models.vgg import cfgs, make_layers

    torch.manual_seed(3)
    return make_layers(cfgs["D"], batch_norm=False)


def _names_from_module_list(features: nn.Sequential) -> dict[str, int]:
    """Name every module of torchvision's list by walking it: blocks end at a MaxPool, the
    L-th Conv2d of block B is convB_L and the ReLU after it reluB_L."""
    names: dict[str, int] = {}
    block, conv = 1, 0
    for index, module in enumerate(features):
        if isinstance(module, nn.Conv2d):
            conv += 1
            names[f"conv{block}_{conv}"] = index
        elif isinstance(module, nn.ReLU):
            names[f"relu{block}_{conv}"] = index
        elif isinstance(module, nn.MaxPool2d):
            names[f"pool{block}"] = index
            block, conv = block + 1, 0
    return names


def test_layer_names_mean_torchvision_module_outputs(tmp_path: Path) -> None:
    """Default taps: ``reluB_L`` is the output of torchvision's ReLU module (post-activation),
    ``convB_L`` of its Conv2d, ``poolB`` of its MaxPool, as the authors' extractor stores."""
    features = _torchvision_vgg16_features().eval()
    names = _names_from_module_list(features)
    assert set(names) == set(vgg_layer_names("vgg16"))
    assert names["relu1_2"] == 3 and names["relu2_2"] == 8 and names["relu3_3"] == 15
    weights = tmp_path / "vgg16.pth"
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, weights)

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    outputs: list[torch.Tensor] = []
    h = (x - mean) / std
    with torch.no_grad():
        for module in features:  # torchvision's ReLUs are in place: keep a copy of each output
            h = module(h)
            outputs.append(h.clone())

    ours = VGGFeatures("vgg16", layers=list(names), weights=weights)(x)
    for layer, index in names.items():
        torch.testing.assert_close(ours[layer], outputs[index], rtol=1e-5, atol=1e-5, msg=layer)
    assert all(ours[n].min() >= 0 for n in names if n.startswith("relu"))
    # the knob still gives the pre-activation when asked for
    pre = VGGFeatures("vgg16", layers=["relu1_2"], before_relu=True, weights=weights)(x)
    torch.testing.assert_close(pre["relu1_2"], outputs[names["conv1_2"]], rtol=1e-5, atol=1e-5)
    assert SPNConfig().feature_before_relu is False


# --------------------------------------------------------------------------- (2) Lamb
def _reference_lamb(
    weights: list[torch.Tensor], grads_per_step: list[list[torch.Tensor]], lr: float,
    betas: tuple[float, float], eps: float,
) -> list[list[torch.Tensor]]:
    """LAMB (You et al. 2019) in float64 with no weight decay and no gradient clipping:
    u = m̂/(√v̂ + ε), w ← w − lr·(‖w‖/‖u‖)·u per tensor. Returns the weights after each step."""
    w = [t.double().clone() for t in weights]
    m = [torch.zeros_like(t) for t in w]
    v = [torch.zeros_like(t) for t in w]
    history = []
    for step, grads in enumerate(grads_per_step, start=1):
        for i, g in enumerate(grads):
            g = g.double()
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            m_hat = m[i] / (1 - betas[0] ** step)
            v_hat = v[i] / (1 - betas[1] ** step)
            u = m_hat / (v_hat.sqrt() + eps)
            ratio = w[i].norm() / u.norm()
            w[i] = w[i] - lr * ratio * u
        history.append([t.clone() for t in w])
    return history


def test_lamb_adapts_every_layer_without_weight_decay() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Conv2d(8, 4, 1), nn.Flatten(), nn.LazyLinear(2))
    model(torch.zeros(1, 3, 6, 6))  # materialise the lazy layer
    cfg = OptimConfig(name="lamb", lr=0.01, weight_decay=0.0, betas=(0.9, 0.99), eps=1e-6)
    optimizer = build_optimizer(model, cfg)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]
    g = torch.Generator().manual_seed(1)
    # large, then small gradients: a hidden global-norm clip at 1.0 would change the second
    # step's direction, Adam without trust ratio would change every step's size
    scales = [50.0, 0.02, 3.0]
    grads_per_step = [[torch.randn(p.shape, generator=g) * s for p in params] for s in scales]
    before = start
    history = _reference_lamb(start, grads_per_step, cfg.lr, cfg.betas, cfg.eps)
    for step, grads in enumerate(grads_per_step):
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad.clone()
        optimizer.step()
        for i, p in enumerate(params):
            update = (p.detach().double() - before[i].double()).norm()
            # the trust ratio makes each layer's step lr·‖w‖, whatever the gradient scale
            assert update.item() == pytest.approx(cfg.lr * before[i].double().norm().item(), rel=1e-4)
            torch.testing.assert_close(p.detach().double(), history[step][i], rtol=1e-5, atol=1e-7)
        before = [p.detach().clone() for p in params]


def test_lamb_clips_only_when_asked() -> None:
    from timm.optim import Lamb

    model = nn.Linear(4, 4)
    optimizer = build_optimizer(model, OptimConfig(name="lamb", lr=1e-3))
    assert isinstance(optimizer, Lamb)
    assert optimizer.defaults["max_grad_norm"] is None and optimizer.defaults["always_adapt"] is True


# (3) fp32 SPN features under autocast: tests/test_loss_precision.py, through the Trainer's step


# --------------------------------------------------------------------------- (4) eval collapse
def test_collapse_seen_in_psnr_with_bounded_loss() -> None:
    """A trial whose outputs fall apart while its loss stays bounded ends as diverged by the
    evaluation rule, which is named in the report."""
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "optim.lr": 1e-9, "train.iterations": 8, "eval.every": 4,
        "train.divergence.eval_psnr_margin_db": 6.0,
    }))
    reporter = CapturingReporter()
    trainer = Trainer(cfg, reporter=reporter)
    with torch.no_grad():  # a broken model: saturated white outputs, L1 loss about 0.5
        last_conv = [m for m in trainer.model.modules() if isinstance(m, nn.Conv2d)][-1]
        last_conv.bias.fill_(3.0)
    outcome = trainer.fit()
    assert outcome.status == "diverged" and outcome.iteration == 4
    last = reporter.reports[-1]
    assert last["status"] == "diverged" and last["diverged"] == 1
    assert last["diverged_rule"] == "eval_psnr_below_reference"
    assert "demo-eval" in last["diverged_detail"]
    assert last["eval.demo-eval.psnr"] < last["eval.demo-eval.psnr_baseline"] - 6.0
    assert all(abs(r.get("loss.total", 0.0)) < 10 for r in reporter.reports)  # the loss never flagged it

    # the same broken run with the rule off (the default) "finishes": the knob is what decided
    off = ExperimentConfig.from_dict(tiny_config_dict(**{"optim.lr": 1e-9, "train.iterations": 8, "eval.every": 4}))
    assert off.train.divergence.eval_psnr_margin_db is None
    trainer = Trainer(off)
    with torch.no_grad():
        [m for m in trainer.model.modules() if isinstance(m, nn.Conv2d)][-1].bias.fill_(3.0)
    assert trainer.fit().status == "finished"


def test_non_finite_eval_outputs_are_a_collapse() -> None:
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"train.ema_decay": 0.9, "eval.every": 4}))
    reporter = CapturingReporter()
    trainer = Trainer(cfg, reporter=reporter)
    with torch.no_grad():  # corrupted evaluation weights: training itself stays finite
        next(trainer.ema.module.parameters()).fill_(float("nan"))
    outcome = trainer.fit()
    assert outcome.status == "diverged" and outcome.iteration == 4
    last = reporter.reports[-1]
    assert last["diverged_rule"] == "eval_nonfinite_output"
    assert math.isfinite(reporter.reports[0]["loss.total"])


def test_loss_rules_are_named(reporter: CapturingReporter) -> None:
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"train.divergence.max_abs_loss": 1e-6}))
    assert Trainer(cfg, reporter=reporter).fit().status == "diverged"
    assert reporter.reports[-1]["diverged_rule"] == "loss_above_max"


# --------------------------------------------------------------------------- engine knobs
def test_grad_value_clip_clamps_every_element() -> None:
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"optim.grad_value_clip": 1e-4}))
    trainer = Trainer(cfg)
    batch = next(iter(trainer._loader()))
    trainer.training_step(batch)
    grads = torch.cat([p.grad.flatten() for p in trainer.model.parameters() if p.grad is not None])
    assert grads.abs().max().item() == pytest.approx(1e-4)
    assert (grads.abs() == grads.abs().max()).sum() > 1  # many elements were clipped
    # without the knob the same step has larger elements
    plain = Trainer(ExperimentConfig.from_dict(tiny_config_dict()))
    plain.training_step(next(iter(plain._loader())))
    assert max(p.grad.abs().max().item() for p in plain.model.parameters() if p.grad is not None) > 1e-3


@pytest.mark.parametrize("factor, skipped", [(1e-6, 6), (1e6, 0)])
def test_loss_spike_skips_the_step(factor: float, skipped: int) -> None:
    """The first logging window (2 steps) sets the reference; with a tiny factor every later
    step is a 'spike' and leaves the weights as they were, with a huge one none is."""
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "train.skip_loss_spike": factor, "train.checkpoint_every": 2, "eval.every": 8,
    }))
    reporter = CapturingReporter()
    trainer = Trainer(cfg, reporter=reporter)
    assert trainer.fit().status == "finished"
    assert reporter.reports[-1]["skipped_steps"] == skipped
    at_2 = next(c for c in reporter.checkpoints if c["iteration"] == 2)["model"]
    same = all(torch.equal(at_2[k], v) for k, v in trainer.model.state_dict().items())
    assert same == (skipped == 6)


def test_eval_quantises_lr_while_training_keeps_it_exact() -> None:
    exact = {"task.quantize_input": False}
    for setting, quantised in ((None, False), (True, True)):
        cfg = ExperimentConfig.from_dict(tiny_config_dict(**exact, **{"eval.quantize_input": setting}))
        trainer = Trainer(cfg)
        _, lq, _ = trainer.evaluator.eval_sets[0].items[0]
        on_grid = torch.equal(lq, (lq * 255).round() / 255)
        assert on_grid == quantised
        assert not trainer.task.config.quantize_input  # training data stays exact


def test_set_average_is_a_metric() -> None:
    sets = [{"kind": "demo", "split": "eval"}, {"kind": "demo", "split": "train", "max_images": 1}]
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "eval.sets": sets, "eval.averages": {"Avg": ["demo-eval", "demo-train"]}, "train.iterations": 4,
    }))
    reporter = CapturingReporter()
    Trainer(cfg, reporter=reporter).fit()
    last = reporter.reports[-1]
    for m in ("psnr_y", "ssim", "psnr_baseline"):
        expected = (last[f"eval.demo-eval.{m}"] + last[f"eval.demo-train.{m}"]) / 2
        assert last[f"eval.Avg.{m}"] == pytest.approx(expected, rel=1e-12)
    from resweep.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown evaluation set.*Set5"):
        ExperimentConfig.from_dict(tiny_config_dict(**{"eval.averages": {"Avg": ["Set5"]}}))


def test_lr_scale_multiplies_the_recipe_lr() -> None:
    model = nn.Linear(2, 2)
    for name in ("adam", "lamb", "sgd"):
        opt = build_optimizer(model, OptimConfig(name=name, lr=1e-3, lr_scale=2.0))
        assert opt.param_groups[0]["lr"] == pytest.approx(2e-3)


# --------------------------------------------------------------------------- presets' protocol
PAPER_AVG = ["Set14", "B100", "Urban100", "Manga109"]


@pytest.mark.parametrize("name", ["spn_table1_edsr", "spn_table1_swinir", "spn_table6", "spn_table7", "spn_table8", "spn_table9"])
def test_spn_presets_protocol(name: str) -> None:
    """SPN numbers: 8-bit LR, EMA 0.999 weights in both arms, fp32 evaluation, the PSNR collapse
    rule on; the Avg presets average the paper's four sets (not Set5) under paper_schedule."""
    from resweep.presets import load_preset

    for paper_schedule in (False, True):
        study = load_preset(name, paper_schedule=paper_schedule)
        configs = [study.experiment_for(t["params"], t["seed"]) for t in study.trial_configs()]
        assert any(c.methods["spn"].enabled and c.methods["spn"].weight > 0 for c in configs)
        for c in configs:
            assert c.task.quantize_input and c.eval.quantize_input in (None, True)
            assert c.train.ema_decay == 0.999 and not c.eval.amp
            assert c.train.divergence.eval_psnr_margin_db is not None
            assert not c.methods["spn"].feature_before_relu and c.methods["spn"].loss_precision == "fp32"
        if "Avg" in study.primary.metric:
            assert set(study.paper.values) == {v.label for v in study.variants}
            if paper_schedule:
                assert configs[0].eval.averages == {"Avg": PAPER_AVG}
                assert "Set5" in [s.display_name for s in configs[0].eval.sets]


@pytest.mark.parametrize("name", ["eco_table1", "eco_table1_rcan", "eco_table1_rcan_x4", "eco_table2", "eco_fig3", "eco_fig4"])
def test_eco_presets_protocol(name: str) -> None:
    """ECO numbers: trained on exact LR, evaluated on 8-bit LR, no EMA in either arm."""
    from resweep.presets import load_preset

    for paper_schedule in (False, True):
        study = load_preset(name, paper_schedule=paper_schedule)
        configs = [study.experiment_for(t["params"], t["seed"]) for t in study.trial_configs()]
        assert any(c.methods["eco"].enabled for c in configs) and any(not c.methods["eco"].enabled for c in configs)
        for c in configs:
            assert not c.task.quantize_input and c.eval.quantize_input is True
            assert c.train.ema_decay is None and not c.eval.amp
            eco = c.methods["eco"]
            if eco.enabled and eco.teacher.train:  # the teacher matches the row's degradation
                assert eco.teacher.train["task"]["scale"] == c.task.scale
                assert eco.teacher.train["task"].get("kind", "sr") == c.task.kind
        if study.paper and study.paper.values:
            assert set(study.paper.values) == {v.label for v in study.variants}


def test_eco_table1_authors_code_row() -> None:
    from resweep.presets import load_preset

    for paper_schedule in (False, True):
        study = load_preset("eco_table1", paper_schedule=paper_schedule)
        by_label = {t["label"]: study.experiment_for(t["params"], t["seed"]) for t in study.trial_configs()}
        text, code = by_label["eco-x2"], by_label["eco-x2-authors-code"]
        assert code.optim.lr * code.optim.lr_scale == pytest.approx(2 * text.optim.lr * text.optim.lr_scale)
        assert code.optim.grad_value_clip == 0.1 and text.optim.grad_value_clip is None
        assert code.loss.pixel_weight == 255 and text.loss.pixel_weight == 1
