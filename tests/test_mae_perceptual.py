"""The "+VGG loss" baseline (method ``perceptual``): value, gradients, refusal, a real run."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resweep.config import ExperimentConfig
from resweep.errors import ConfigError, WeightsNotFoundError
from resweep.methods import MethodContext, World
from resweep.methods.perceptual import Perceptual

from conftest import tiny_config_dict


def _method(pixel: str = "l1", **knobs) -> Perceptual:
    knobs = {"allow_random_features": True, "feature_layers": ["relu1_2", "relu2_2"], **knobs}
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.perceptual": knobs, "loss.pixel": pixel}))
    context = MethodContext(config=cfg, model=torch.nn.Identity(), task=None, world=World(),  # type: ignore[arg-type]
                            cache_dir=Path("."), log=lambda _m: None)
    return Perceptual(cfg.methods["perceptual"], context)


def _vgg_by_hand(method: Perceptual, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """relu1_2 and relu2_2 (post-ReLU) of the same weights, float64, plain functional calls."""
    feats = method.features.features  # type: ignore[union-attr]
    w = {i: (m.weight.double(), m.bias.double()) for i, m in enumerate(feats) if isinstance(m, torch.nn.Conv2d)}
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    h = (x.double() - mean) / std
    h = F.relu(F.conv2d(h, *w[0], padding=1))
    r12 = F.relu(F.conv2d(h, *w[2], padding=1))
    h = F.max_pool2d(r12, 2)
    h = F.relu(F.conv2d(h, *w[5], padding=1))
    r22 = F.relu(F.conv2d(h, *w[7], padding=1))
    return {"relu1_2": r12, "relu2_2": r22}


@pytest.mark.parametrize("pixel", ["l1", "l2"])
def test_value_equals_independent_computation(pixel):
    method = _method(pixel=pixel, weight=0.5, layer_weights=[0.3, 0.7], distance="same_as_pixel")
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 20, 20, generator=g)
    pred = torch.rand(2, 3, 20, 20, generator=g)
    got = method.loss_terms(pred, {"gt": y}, iteration=0)["perceptual"]
    fp, fy = _vgg_by_hand(method, pred), _vgg_by_hand(method, y)
    want = 0.0
    for layer, w in (("relu1_2", 0.3), ("relu2_2", 0.7)):
        d = fp[layer] - fy[layer]
        want += w * (d.abs().mean() if pixel == "l1" else (d**2).mean())
    assert got.item() == pytest.approx(0.5 * float(want), rel=1e-5)


def test_defaults_are_johnsons_feature_reconstruction_loss():
    """VGG-16, relu2_2 after its ReLU, mean squared difference, whatever the pixel loss."""
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.perceptual": {}, "loss.pixel": "l1"}))
    knobs = cfg.methods["perceptual"]
    assert (knobs.feature_net, knobs.feature_layers, knobs.distance) == ("vgg16", ["relu2_2"], "l2")
    method = _method(pixel="l1", feature_layers=["relu2_2"])
    assert method.cfg.feature_net == "vgg16" and method.distance_kind == "l2"
    g = torch.Generator().manual_seed(1)
    y, pred = torch.rand(2, 3, 24, 24, generator=g), torch.rand(2, 3, 24, 24, generator=g)
    got = method.loss_terms(pred, {"gt": y}, iteration=0)["perceptual"]
    d = _vgg_by_hand(method, pred)["relu2_2"] - _vgg_by_hand(method, y)["relu2_2"]
    assert got.item() == pytest.approx(float((d**2).mean()), rel=1e-5)


def test_no_gradient_to_vgg_and_none_for_the_target():
    method = _method()
    modes: list[bool] = []
    method.features.features[0].register_forward_pre_hook(lambda _m, _i: modes.append(torch.is_grad_enabled()))  # type: ignore[union-attr]
    pred = torch.rand(1, 3, 16, 16, requires_grad=True)
    method.loss_terms(pred, {"gt": torch.rand(1, 3, 16, 16)}, iteration=0)["perceptual"].backward()
    assert sorted(modes) == [False, True]
    assert all(p.grad is None for p in method.features.parameters())  # type: ignore[union-attr]
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert method.state_dict() == {}


def test_refuses_without_weights_unless_random_allowed(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    try:
        with pytest.raises(WeightsNotFoundError, match="allow_random_features"):
            _method(allow_random_features=False)
        assert any("RANDOM" in n for n in _method().notes())
    finally:
        torch.hub.set_dir(old)


def test_config_checks_layers():
    with pytest.raises(ConfigError, match="methods.perceptual.layer_weights"):
        ExperimentConfig.from_dict(tiny_config_dict(**{"methods.perceptual": {"layer_weights": [1.0, 2.0]}}))
    with pytest.raises(ConfigError, match="unknown vgg16 layer"):
        ExperimentConfig.from_dict(tiny_config_dict(**{"methods.perceptual": {"feature_layers": ["relu9_9"]}}))
    with pytest.raises(ConfigError, match="unknown vgg16 layer"):  # VGG-16 has no relu3_4
        ExperimentConfig.from_dict(tiny_config_dict(**{"methods.perceptual": {"feature_layers": ["relu3_4"]}}))


def test_training_run_reports_the_perceptual_term(reporter):
    from resweep.engine.trainer import Trainer

    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "methods.perceptual": {"allow_random_features": True, "feature_layers": ["relu1_2"], "weight": 0.1},
        "train.iterations": 2, "train.log_every": 1,
    }))
    outcome = Trainer(cfg, reporter=reporter, log=lambda _m: None).fit()
    assert outcome.status == "finished"
    logged = [r for r in reporter.reports if "loss.perceptual" in r]
    assert len(logged) == 2
    for r in logged:
        assert r["loss.total"] == pytest.approx(r["loss.pixel"] + r["loss.perceptual"], rel=1e-5)


def test_a_methods_caveat_reaches_the_report_and_stays_out_of_the_curves(reporter, tmp_path, monkeypatch):
    """Random VGG features are not the paper's setting: the trial's reports carry that note (so a
    study's trials.parquet and its tables can say it), and the local run's curves do not."""
    from resweep.engine.records import NOTES_KEY, RunRecorder, split_report
    from resweep.engine.trainer import Trainer

    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no_weights_here"))
    knobs = {"allow_random_features": True, "feature_layers": ["relu1_2"]}
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "methods.perceptual": knobs, "train.iterations": 4, "train.log_every": 2, "eval.every": 4}))
    Trainer(cfg, reporter=reporter, cache_dir=tmp_path).fit()
    noted = [m for m in reporter.reports if NOTES_KEY in m]
    assert noted, [sorted(m) for m in reporter.reports]
    assert all("perceptual:" in m[NOTES_KEY] and "random" in m[NOTES_KEY] for m in noted)
    recorder = RunRecorder(tmp_path / "run")
    for metrics in reporter.reports:
        recorder.add(metrics)
        assert NOTES_KEY not in split_report(metrics)[0]
    assert all(NOTES_KEY not in row for row in recorder.curves)
