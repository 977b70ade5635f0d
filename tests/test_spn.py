"""MCIR/SPN: loss vs an independent float64 reference, EMA timing, weights handling, resume,
config validation, and a short real training run through the engine."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from resweep.config import ExperimentConfig
from resweep.errors import ConfigError, WeightsNotFoundError
from resweep.losses.feature_nets import VGGFeatures, vgg_layer_table
from resweep.methods import METHODS, MethodContext, World
from resweep.methods.spn import SPN, SPNConfig
from resweep.models import create_model

torch.set_num_threads(1)

DATASETS = Path("/work/shared/datasets")
LAYERS = ["relu1_1", "relu1_2", "relu2_2"]  # stops at features.8: a small, real-width VGG16 head
LAYER_WEIGHTS = [0.2, 0.3, 0.5]
LAST_INDEX = 8


def _vgg_head_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random VGG16 conv weights up to features.8, keyed like torchvision/timm."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    in_ch = 3
    for index, (kind, name) in enumerate(vgg_layer_table("vgg16")):
        if index > LAST_INDEX:
            break
        if kind == "conv":
            out_ch = 64 if name.startswith("conv1") else 128
            state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * (
                1.5 / math.sqrt(in_ch * 9)
            )
            state[f"features.{index}.bias"] = torch.randn(out_ch, generator=g) * 0.1
            in_ch = out_ch
    return state


def _layout_keys(layout: str) -> list[str]:
    """The real key names of the installed torchvision / timm VGG16 (built on the meta device)."""
    with torch.device("meta"):
        if layout == "torchvision":
            import torchvision

            net = torchvision.models.vgg16(weights=None)
        else:
            import timm

            net = timm.create_model("vgg16", pretrained=False)
    return list(net.state_dict())


def _save_layout(path: Path, layout: str, head: dict[str, torch.Tensor]) -> Path:
    keys = _layout_keys(layout)
    missing = set(head) - set(keys)
    assert not missing, f"{layout} names its convs differently: {missing}"
    # Deeper layers and the classifier are placeholders: the loader must ignore them.
    torch.save({k: head.get(k, torch.zeros(1)) for k in keys}, path)
    return path


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No VGG weights anywhere: empty hub dir, no env variable."""
    hub = tmp_path / "hub"
    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _experiment(model: str = "edsr_tiny", seed: int = 0) -> ExperimentConfig:
    return ExperimentConfig.from_dict(
        {"model": {"name": model}, "task": {"kind": "sr", "scale": 2}, "train": {"seed": seed}}
    )


def _build(config: SPNConfig, model: nn.Module | None = None, seed: int = 0) -> tuple[SPN, nn.Module]:
    exp = _experiment(seed=seed)
    if model is None:
        torch.manual_seed(seed)
        model = create_model("edsr_tiny", scale=2)
    context = MethodContext(
        config=exp, model=model, task=None, world=World(), cache_dir=Path("."), log=lambda _m: None
    )
    return SPN(config, context), model


# --------------------------------------------------------------------------- (1) loss
def _reference_features(x: torch.Tensor, head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Independent float64 VGG forward: ImageNet normalisation, post-ReLU taps (the default)."""
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    x = (x - mean) / std
    c11 = F.conv2d(x, head["features.0.weight"].double(), head["features.0.bias"].double(), padding=1)
    c12 = F.conv2d(c11.relu(), head["features.2.weight"].double(), head["features.2.bias"].double(), padding=1)
    p1 = F.max_pool2d(c12.relu(), 2)
    c21 = F.conv2d(p1, head["features.5.weight"].double(), head["features.5.bias"].double(), padding=1)
    c22 = F.conv2d(c21.relu(), head["features.7.weight"].double(), head["features.7.bias"].double(), padding=1)
    return {"relu1_1": c11.relu(), "relu1_2": c12.relu(), "relu2_2": c22.relu()}


@pytest.mark.parametrize("layout", ["torchvision", "timm"])
@pytest.mark.parametrize("batching", ["batched", "per_negative"])
def test_loss_matches_float64_reference(tmp_path: Path, layout: str, batching: str) -> None:
    head = _vgg_head_state(seed=1)
    weights = _save_layout(tmp_path / f"vgg16-{layout}.pth", layout, head)
    weight = 0.5
    cfg = SPNConfig(
        weight=weight,
        negative_step_set=[2, 3],
        feature_layers=LAYERS,
        layer_weights=LAYER_WEIGHTS,
        feature_weights=weights,
        neg_start=0.5,  # negatives clearly different from the model
        negative_features=batching,
    )
    spn, _ = _build(cfg)
    assert spn.features is not None and spn.features.weights_path == weights
    assert len(spn.negatives) == 2

    g = torch.Generator().manual_seed(7)
    lq = torch.rand(2, 3, 8, 8, generator=g)
    pred = torch.rand(2, 3, 16, 16, generator=g).requires_grad_(True)
    terms = spn.loss_terms(pred, {"lq": lq, "gt": torch.rand(2, 3, 16, 16)}, iteration=0)
    assert set(terms) == {"spn"}
    terms["spn"].backward()

    # Reference: the paper's loss (Wu et al., AAAI 2024) in float64, with float64 copies of the negatives.
    pred64 = pred.detach().double().requires_grad_(True)
    phi_y = _reference_features(pred64, head)
    total = torch.zeros((), dtype=torch.float64)
    for negative in spn.negatives:
        with torch.no_grad():
            n = copy.deepcopy(negative).double()(lq.double())
            phi_n = _reference_features(n, head)
        for layer, w in zip(LAYERS, LAYER_WEIGHTS, strict=True):
            total = total + w * (phi_y[layer] - phi_n[layer]).abs().mean()
    reference = -weight * total / len(spn.negatives)
    reference.backward()

    assert terms["spn"].item() < 0  # subtracted: pushes away from the negatives
    assert terms["spn"].item() == pytest.approx(reference.item(), rel=1e-5)
    assert pred.grad is not None and pred64.grad is not None
    torch.testing.assert_close(pred.grad.double(), pred64.grad, rtol=1e-4, atol=1e-9)
    # the unweighted distance is reported
    assert spn.metrics(1)["negative_distance"] == pytest.approx(-reference.item() / weight, rel=1e-5)
    assert spn.metrics(2) == {}  # reset after reporting
    # negatives get no gradient
    assert all(p.grad is None for p in spn.negatives.parameters())


def test_feature_net_truncates_and_freezes(tmp_path: Path) -> None:
    weights = _save_layout(tmp_path / "w.pth", "torchvision", _vgg_head_state())
    net = VGGFeatures("vgg16", layers=("relu1_2", "conv2_2"), weights=weights)
    assert len(net.features) == LAST_INDEX  # features.0..7: conv2_2 is index 7
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training
    out = net(torch.rand(1, 3, 8, 8))
    assert set(out) == {"relu1_2", "conv2_2"}
    after = VGGFeatures("vgg16", layers=("relu1_2",), before_relu=False, weights=weights)
    assert (after(torch.rand(1, 3, 8, 8))["relu1_2"] >= 0).all()
    with pytest.raises(Exception, match="features.10.weight"):
        VGGFeatures("vgg16", layers=("relu3_1",), weights=weights)


# --------------------------------------------------------------------------- (2) EMA and init
def test_init_formula_and_determinism(no_weights: Path) -> None:
    s = 0.05
    cfg = SPNConfig(negative_step_set=[2, 3], neg_start=s, allow_random_features=True)
    spn, model = _build(cfg)
    current = dict(model.named_parameters())
    for k, negative in enumerate(spn.negatives):
        rand = dict(spn.random_negative(k).named_parameters())
        for name, p in negative.named_parameters():
            expected = s * rand[name].double() + (1 - s) * current[name].double()
            torch.testing.assert_close(p.double(), expected, rtol=0, atol=1e-6)
            assert not p.requires_grad
    a = dict(spn.random_negative(0).named_parameters())["head.weight"]
    b = dict(spn.random_negative(1).named_parameters())["head.weight"]
    assert not torch.equal(a, b)  # each negative has its own random init
    # Same seed, different global RNG state (as on another rank): identical negatives.
    torch.manual_seed(999)
    other, _ = _build(cfg, model=copy.deepcopy(model))
    for x, y in zip(spn.state_dict().values(), other.state_dict().values(), strict=True):
        assert torch.equal(x, y)


def test_ema_update_timing_and_arithmetic(no_weights: Path) -> None:
    betas = [0.5, 0.25]
    cfg = SPNConfig(negative_step_set=[2, 3], ema_beta=betas, allow_random_features=True)
    spn, model = _build(cfg)
    names = [n for n, _ in model.named_parameters()]
    expected = [
        {n: p.detach().double().clone() for n, p in neg.named_parameters()} for neg in spn.negatives
    ]
    updates = {1: [], 2: [0], 3: [1], 4: [0], 5: [], 6: [0, 1]}
    for it in range(1, 7):
        with torch.no_grad():  # the "optimiser step": a known change of θ
            for i, p in enumerate(model.parameters()):
                p.add_(0.1 * it + 0.01 * i)
            model.add_mean.mean.fill_(float(it))  # a float buffer: copied, not averaged
        spn.after_step(model, it)
        theta = {n: p.detach().double() for n, p in model.named_parameters()}
        for k in updates[it]:
            for n in names:
                expected[k][n] = betas[k] * expected[k][n] + (1 - betas[k]) * theta[n]
        for k, negative in enumerate(spn.negatives):
            for n, p in negative.named_parameters():
                torch.testing.assert_close(p.double(), expected[k][n], rtol=0, atol=1e-5)
        last_update = {0: [2, 4, 6], 1: [3, 6]}
        for k, negative in enumerate(spn.negatives):
            done = [t for t in last_update[k] if t <= it]
            want = float(done[-1]) if done else 0.0
            if want:
                assert negative.add_mean.mean.eq(want).all(), (it, k)


def test_fixed_kinds_never_update(no_weights: Path, tmp_path: Path) -> None:
    cfg = SPNConfig(negative_kind="random_fixed", negative_step_set=[1], allow_random_features=True)
    spn, model = _build(cfg)
    rand = spn.random_negative(0).state_dict()
    for n, t in spn.negatives[0].state_dict().items():
        assert torch.equal(t, rand[n])  # pure random init, not mixed with θ
    before = copy.deepcopy(spn.state_dict())
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    spn.after_step(model, 1)
    assert all(torch.equal(before[k], v) for k, v in spn.state_dict().items())

    pretrained = create_model("edsr_tiny", scale=2)
    torch.save({"params": pretrained.state_dict()}, tmp_path / "neg.pth")
    cfg = SPNConfig(
        negative_kind="pretrained_fixed",
        pretrained_negative=tmp_path / "neg.pth",
        negative_step_set=[1, 2],
        allow_random_features=True,
    )
    spn, model = _build(cfg)
    for negative in spn.negatives:
        for n, t in negative.state_dict().items():
            assert torch.equal(t, pretrained.state_dict()[n])
    spn.after_step(model, 2)
    for n, t in spn.negatives[1].state_dict().items():
        assert torch.equal(t, pretrained.state_dict()[n])


def test_none_kind_has_no_term(no_weights: Path) -> None:
    spn, _ = _build(SPNConfig(negative_kind="none"))  # needs no VGG weights at all
    assert spn.loss_terms(torch.rand(1, 3, 8, 8), {"lq": torch.rand(1, 3, 4, 4)}, 0) == {}
    assert len(spn.negatives) == 0 and spn.features is None
    assert any("no negative term" in n for n in spn.notes())


# --------------------------------------------------------------------------- (3) weights
def test_missing_weights_message(no_weights: Path) -> None:
    with pytest.raises(WeightsNotFoundError) as info:
        _build(SPNConfig(negative_step_set=[5]))
    msg = str(info.value)
    assert "vgg16-397923af.pth" in msg and str(no_weights) in msg
    assert "RESWEEP_VGG_WEIGHTS" in msg and "allow_random_features" in msg
    # an explicit path that does not exist is reported as such, even with random allowed
    with pytest.raises(WeightsNotFoundError, match="nowhere.pth"):
        _build(SPNConfig(feature_weights=Path("/nowhere.pth"), allow_random_features=True))


def test_weights_from_env(no_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _save_layout(tmp_path / "env.pth", "timm", _vgg_head_state())
    monkeypatch.setenv("RESWEEP_VGG_WEIGHTS", str(path))
    spn, _ = _build(SPNConfig(feature_layers=LAYERS, layer_weights=LAYER_WEIGHTS))
    assert spn.features is not None and spn.features.weights_path == path
    assert not any("RANDOM" in n for n in spn.notes())


def test_safetensors_and_nested_files(tmp_path: Path) -> None:
    safetensors = pytest.importorskip("safetensors.torch")
    head = _vgg_head_state(seed=2)
    x = torch.rand(1, 3, 8, 8)
    ref = VGGFeatures(layers=("relu2_2",), weights=_save_layout(tmp_path / "a.pth", "timm", head))(x)
    safetensors.save_file(head, str(tmp_path / "model.safetensors"))
    torch.save({"state_dict": {f"module.{k}": v for k, v in head.items()}}, tmp_path / "nested.pth")
    for name in ("model.safetensors", "nested.pth"):
        out = VGGFeatures(layers=("relu2_2",), weights=tmp_path / name)(x)
        assert torch.equal(out["relu2_2"], ref["relu2_2"]), name


def test_allow_random_is_recorded(no_weights: Path) -> None:
    spn, _ = _build(SPNConfig(negative_step_set=[5], allow_random_features=True))
    assert spn.features is not None and spn.features.random_weights
    assert any("RANDOM" in n and "not the paper's setting" in n for n in spn.notes())


# --------------------------------------------------------------------------- (4) resume
def test_state_dict_round_trip(no_weights: Path) -> None:
    cfg = SPNConfig(negative_step_set=[1, 2], allow_random_features=True)
    spn, model = _build(cfg, seed=0)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    spn.after_step(model, 2)
    state = copy.deepcopy(spn.state_dict())
    assert any(k.startswith("negatives.1.") for k in state)
    restored, _ = _build(cfg, seed=5)  # a different seed: different negatives before loading
    assert not torch.equal(restored.state_dict()["negatives.0.head.weight"], state["negatives.0.head.weight"])
    restored.load_state_dict(state)
    for key, value in restored.state_dict().items():
        assert torch.equal(value, state[key]), key
    batch = {"lq": torch.rand(1, 3, 8, 8)}
    pred = torch.rand(1, 3, 16, 16)
    assert torch.equal(spn.loss_terms(pred, batch, 3)["spn"], restored.loss_terms(pred, batch, 3)["spn"])


# --------------------------------------------------------------------------- (5) validation
@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"layer_weights": [1.0, 2.0]}, "layer_weights"),
        ({"negative_step_set": [10, 20, 30], "ema_beta": [0.1, 0.2]}, "ema_beta"),
        ({"negative_kind": "momentum"}, "negative_kind"),
        ({"negative_kind": "pretrained_fixed"}, "pretrained_negative"),
        ({"feature_layers": ["relu9_9"], "layer_weights": [1.0]}, "feature_layers"),
        ({"ema_beta": 1.5}, "ema_beta"),
        ({"negative_step_set": [0]}, "negative_step_set"),
    ],
)
def test_config_errors_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        SPNConfig(**settings)
    assert info.value.errors()[0]["loc"] == (field,)
    with pytest.raises(ConfigError) as cfg_info:
        ExperimentConfig.from_dict({"methods": {"spn": settings}})
    assert field in str(cfg_info.value) and cfg_info.value.field is not None
    assert cfg_info.value.field.endswith(field)


def test_registered_and_dotted_paths() -> None:
    assert METHODS.get("spn") is SPN
    cfg = ExperimentConfig().with_overrides(
        {"methods.spn.weight": 5e-4, "methods.spn.ema_beta": [0.1, 0.9, 0.5, 0.5]}
    )
    spn_cfg = cfg.methods["spn"]
    assert isinstance(spn_cfg, SPNConfig) and spn_cfg.weight == 5e-4
    assert spn_cfg.betas == [0.1, 0.9, 0.5, 0.5]
    assert SPNConfig(ema_beta=0.3).betas == [0.3] * 4


# --------------------------------------------------------------------------- (6) engine
class _Collect:
    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        self.rows.append(dict(metrics))


@pytest.mark.skipif(not (DATASETS / "CBSD432").is_dir(), reason="needs /work/shared/datasets")
def test_short_training_run(no_weights: Path, tmp_path: Path) -> None:
    from resweep.engine.trainer import Trainer

    config = ExperimentConfig.from_dict(
        {
            "name": "spn-smoke",
            "task": {"kind": "sr", "scale": 2},
            "model": {"name": "edsr_tiny"},
            "data": {
                "train": {"kind": "folder", "path": str(DATASETS / "CBSD432"), "max_images": 8},
                "patch_size": 16,
                "batch_size": 4,
            },
            "train": {"iterations": 20, "log_every": 5, "device": "cpu", "seed": 3},
            "eval": {
                "every": 20,
                "max_side": 64,
                "sets": [{"kind": "folder", "path": str(DATASETS / "CSet5")}],
            },
            "methods": {
                "spn": {
                    "weight": 1e-4,
                    "negative_step_set": [5, 10],
                    "allow_random_features": True,
                    "feature_layers": ["relu1_2", "relu2_2"],
                    "layer_weights": [0.4, 0.6],
                }
            },
        }
    )
    reporter = _Collect()
    trainer = Trainer(config, reporter=reporter, cache_dir=tmp_path, log=lambda _m: None)
    outcome = trainer.fit()
    assert outcome.status == "finished" and outcome.iteration == 20
    rows = [r for r in reporter.rows if "loss.total" in r]
    assert len(rows) == 4
    for row in rows:
        assert math.isfinite(row["loss.pixel"]) and row["loss.spn"] < 0
        assert row["spn.negative_distance"] > 0
        assert row["loss.total"] == pytest.approx(row["loss.pixel"] + row["loss.spn"], rel=1e-4)
    assert any(k.startswith("eval.") for k in reporter.rows[-1])
    spn = trainer.methods["spn"]
    assert isinstance(spn, SPN) and any("RANDOM" in n for n in spn.notes())
    # negative 0 (T=5) was last refreshed at step 20, negative 1 (T=10) at 20 too: resume state
    state = trainer.state_dict()["methods"]["spn"]
    assert "negatives.0.head.weight" in state and "features.features.0.weight" in state


# --------------------------------------------------------------------------- presets
@pytest.mark.parametrize("table", [6, 7, 8, 9])
def test_presets_load(table: int) -> None:
    from resweep.presets import load_preset

    for paper_schedule in (False, True):
        study = load_preset(f"spn_table{table}", paper_schedule=paper_schedule)
        assert study.paper is not None and set(study.paper.values) == {v.label for v in study.variants}
        assert study.baseline in study.paper.values and study.seeds == [0, 1, 2]
        for trial in study.trial_configs():
            spn = study.experiment_for(trial["params"], trial["seed"]).methods["spn"]
            assert isinstance(spn, SPNConfig) and not spn.allow_random_features
    long = load_preset(f"spn_table{table}", paper_schedule=True).base.train.iterations
    assert long >= 300_000 > load_preset(f"spn_table{table}").base.train.iterations
