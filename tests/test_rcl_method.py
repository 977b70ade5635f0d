"""The `rcl` method: residual crops, contrastive + consistency terms, no clean images, encoder loading."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from resweep.config import ExperimentConfig
from resweep.errors import ConfigError, ResweepError, WeightsNotFoundError
from resweep.losses.resnet_features import ResNetFeatures
from resweep.methods import MethodContext, World
from resweep.methods.rcl import RCL, RCLConfig, two_overlapping_crops
from resweep.methods.spn import derive_seed
from resweep.models import create_model
from tests.conftest import tiny_config_dict


@pytest.fixture
def no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    monkeypatch.delenv("RESWEEP_RESNET_WEIGHTS", raising=False)
    monkeypatch.delenv("RESWEEP_VGG_WEIGHTS", raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    return hub


def _experiment(**overrides) -> ExperimentConfig:
    data = tiny_config_dict(**{
        "task": {"kind": "hetero_denoise", "scale": 1},
        "model.name": "unet_tiny",
        "data.patch_size": 16,
        "data.batch_size": 4,
        **overrides,
    })
    return ExperimentConfig.from_dict(data)


def _build(cfg: RCLConfig, exp: ExperimentConfig | None = None) -> RCL:
    exp = exp or _experiment()
    model = create_model("unet_tiny", scale=1)
    context = MethodContext(config=exp, model=model, task=None, world=World(), cache_dir=Path("."),
                            log=lambda _m: None)
    return RCL(cfg, context)


def _random_cfg(**kw) -> RCLConfig:
    base = dict(crop_size=8, crop_overlap=0.5, encoder="resnet18", encoder_layer="layer1",
                allow_random_features=True)
    return RCLConfig(**{**base, **kw})


class NoCleanBatch(dict):
    def __getitem__(self, key):
        if key == "gt":
            raise AssertionError("the method read the clean image")
        return super().__getitem__(key)

    def get(self, key, default=None):
        if key == "gt":
            raise AssertionError("the method read the clean image")
        return super().get(key, default)


def test_crops_overlap_as_configured():
    x = torch.arange(2 * 1 * 12 * 12, dtype=torch.float32).view(2, 1, 12, 12)
    g = torch.Generator().manual_seed(0)
    a, b = two_overlapping_crops(x, crop_size=6, shift=2, generator=g)
    assert a.shape == b.shape == (2, 1, 6, 6)
    # the second crop's top-left 4x4 is the first crop's bottom-right 4x4 (shift 2 on each axis)
    assert torch.equal(a[:, :, 2:, 2:], b[:, :, :4, :4])
    assert not torch.equal(a, b)
    with pytest.raises(ValueError, match="smaller than two crops"):
        two_overlapping_crops(x, crop_size=11, shift=2, generator=g)


class GlobalMean(torch.nn.Module):
    """A 'network' whose receptive field is the whole input: f(x) = x/2 + (per-channel mean)/2
    (plus a scaled conv so it has weights). Its residual on a crop is not the crop of its
    residual on the patch."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(0.5 * torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + 0.5 * x.mean(dim=(2, 3), keepdim=True)


def _engine_step(rcl: RCL, model: torch.nn.Module, lq: torch.Tensor, iteration: int) -> tuple[dict, torch.Tensor]:
    """What the trainer does with a batch: the methods' transform, the forward, the loss terms."""
    batch = rcl.transform_batch(NoCleanBatch(lq=lq), iteration)
    prediction = model(batch["lq"])
    return rcl.loss_terms(prediction, NoCleanBatch(batch), iteration), prediction


def test_residuals_are_the_networks_output_on_each_crop(no_weights):
    """Algorithm 1 runs the network on each of the 2N+2 crops. Against an independent
    computation: the crops cut by hand (same seed), the network run on each crop alone, EMD of
    the sorted values, the cross-entropy written out. Cutting both crops from one residual of
    the patch gives other numbers for a network whose receptive field exceeds the crop."""
    torch.manual_seed(0)
    model = GlobalMean()
    rcl = _build(_random_cfg(alpha=0.5, temperature=0.05))
    assert any("RANDOM" in n for n in rcl.notes())  # recorded as not the paper's setting
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(4, 3, 16, 16, generator=g) * torch.linspace(0.2, 1.0, 4).view(4, 1, 1, 1)
    terms, prediction = _engine_step(rcl, model, lq, iteration=3)
    assert set(terms) == {"rcl_contrast", "rcl_consistency"}
    assert prediction.shape == (8, 3, 8, 8)  # the network saw the 2N+2 crops, not the patches

    gen = torch.Generator().manual_seed(derive_seed(0, "rcl-crops", 3, 0))
    crop_a, crop_b = two_overlapping_crops(lq, 8, 4, gen)
    with torch.no_grad():
        own_a = [crop_a[j] - model(crop_a[j][None])[0] for j in range(4)]
        own_b = [crop_b[j] - model(crop_b[j][None])[0] for j in range(4)]
        # the positive pair's residuals differ where the crops overlap: each crop has its own
        for j in range(4):
            assert not torch.allclose(own_a[j][:, 4:, 4:], own_b[j][:, :4, :4], atol=1e-4)

    def emd(x: torch.Tensor, y: torch.Tensor) -> float:
        return float((x.double().flatten().sort().values - y.double().flatten().sort().values).abs().mean())

    total = 0.0
    for j in range(4):
        logits = [-emd(own_a[j], own_b[i]) / 0.05 for i in range(4)]
        total += -(logits[j] - math.log(sum(math.exp(v) for v in logits)))
    assert terms["rcl_contrast"].item() == pytest.approx(0.5 * total, rel=1e-5)
    # the shared-residual way (one forward on the patch, both crops cut from it) is different
    with torch.no_grad():
        shared = lq - model(lq)
    sa, sb = two_overlapping_crops(shared, 8, 4, torch.Generator().manual_seed(derive_seed(0, "rcl-crops", 3, 0)))
    shared_total = 0.0
    for j in range(4):
        logits = [-emd(sa[j], sb[i]) / 0.05 for i in range(4)]
        shared_total += -(logits[j] - math.log(sum(math.exp(v) for v in logits)))
    assert abs(shared_total - total) > 1e-3 * abs(total)

    # the consistency term compares f(x) and x on the same crops the network ran on
    crops = torch.cat([crop_a, crop_b])
    with torch.no_grad():
        want = F.mse_loss(rcl.encoder(model(crops)), rcl.encoder(crops))
    assert terms["rcl_consistency"].item() == pytest.approx(want.item(), rel=1e-5)
    sum(terms.values()).backward()
    assert model.conv.weight.grad is not None and torch.isfinite(model.conv.weight.grad).all()
    assert model.conv.weight.grad.abs().sum() > 0
    metrics = rcl.metrics(3)
    assert set(metrics) >= {"positive_distance", "negative_distance", "anchor_accuracy"}


def test_loss_terms_refuse_an_output_that_is_not_of_the_crops(no_weights):
    rcl = _build(_random_cfg())
    lq = torch.rand(4, 3, 16, 16)
    with pytest.raises(ValueError, match="2B crops of 8 px"):
        rcl.loss_terms(lq.clone(), {"lq": lq}, iteration=0)  # the patch, not transform_batch's crops


def test_mmd_positions_are_redrawn_each_iteration_and_reproducible(no_weights):
    rcl = _build(_random_cfg(distance="mmd", mmd_samples=16, consistency_weight=0))
    g = torch.Generator().manual_seed(2)
    residual = torch.randn(8, 3, 8, 8, generator=g) * torch.linspace(0.01, 0.1, 8).view(8, 1, 1, 1)
    first, again, later = (rcl.distance_matrix(residual, it) for it in (5, 5, 6))
    assert torch.equal(first, again)  # the same iteration (e.g. after a resume): the same positions
    assert not torch.allclose(first, later)  # the next iteration: new positions
    # ... the positions a float64 reference draws from the documented seed
    seed = derive_seed(0, "rcl-mmd-positions", 6, 0)
    idx = torch.randperm(3 * 8 * 8, generator=torch.Generator().manual_seed(seed))[:16]
    a, b = residual[:4].flatten(1)[:, idx].double(), residual[4:].flatten(1)[:, idx].double()

    def k(u: torch.Tensor, v: torch.Tensor) -> float:
        sq = (u[:, None] - v[None, :]) ** 2
        return float(sum(torch.exp(-sq / (2 * s * s)) for s in (0.01, 0.03, 0.1)).mean())

    want = k(a[1], a[1]) + k(b[2], b[2]) - 2 * k(a[1], b[2])
    assert later[1, 2].item() == pytest.approx(want, rel=1e-4, abs=1e-7)


def test_rcl_training_data_has_no_clean_images_and_engine_trains(tmp_path, no_weights, reporter):
    from resweep.engine.trainer import Trainer

    exp = _experiment(**{"train.iterations": 3, "train.log_every": 1, "eval.every": 3,
                         "methods": {"rcl": _random_cfg().model_dump(mode="json")}})
    trainer = Trainer(exp, reporter=reporter, cache_dir=tmp_path, log=lambda _m: None)
    sample = trainer.dataset[(0, 5)]
    assert "gt" not in sample and sample["lq"].shape == (3, 16, 16)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    outcome = trainer.fit()
    assert outcome.status == "finished"
    losses = [r["loss.total"] for r in reporter.reports if "loss.total" in r]
    assert len(losses) == 3 and all(math.isfinite(v) for v in losses)
    assert "loss.pixel" not in reporter.reports[0]  # the supervised loss is replaced
    assert any(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    assert "rcl.anchor_accuracy" in reporter.reports[0]


def test_config_errors_are_specific(no_weights):
    with pytest.raises(ConfigError, match="task.scale must be 1"):
        _build(_random_cfg(), _experiment(**{"task": {"kind": "sr", "scale": 2}, "model.name": "unet_tiny"}))
    with pytest.raises(ConfigError, match="data.patch_size=16"):
        _build(_random_cfg(crop_size=14))
    with pytest.raises(ValidationError, match="not a ResNet stage"):
        RCLConfig(encoder="resnet50", encoder_layer="relu3_3")
    with pytest.raises(ValidationError, match="not a vgg16 layer"):
        RCLConfig(encoder="vgg16", encoder_layer="layer2")
    with pytest.raises(WeightsNotFoundError, match="allow_random_features"):
        _build(_random_cfg(allow_random_features=False))


def test_resnet_encoder_loads_a_torchvision_file_it_did_not_make(tmp_path, no_weights):
    import torchvision

    torch.manual_seed(3)
    reference = torchvision.models.resnet18(weights=None).eval()
    # perturb batch-norm statistics so a loader that skipped buffers would be caught
    with torch.no_grad():
        reference.bn1.running_mean.uniform_(-0.5, 0.5)
        reference.layer1[0].bn2.running_var.uniform_(0.5, 2.0)
    keep = ("conv1.", "bn1.", "layer1.")
    state = {k: v for k, v in reference.state_dict().items() if k.startswith(keep)}
    path = tmp_path / "resnet18-f37072fd.pth"
    torch.save(state, path)
    feats = ResNetFeatures("resnet18", "layer1", weights=path)
    x = torch.rand(1, 3, 32, 32)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    xn = (x - mean) / std
    with torch.no_grad():
        want = reference.layer1(reference.maxpool(reference.relu(reference.bn1(reference.conv1(xn)))))
        got = feats(x)
    assert torch.allclose(got, want, atol=1e-5)
    assert all(not p.requires_grad for p in feats.parameters())
    # found through the hub cache too, by the torchvision file name
    no_weights.joinpath("checkpoints").mkdir(parents=True)
    path.rename(no_weights / "checkpoints" / path.name)
    assert ResNetFeatures("resnet18", "layer1").weights_path == no_weights / "checkpoints" / path.name
    # a file that stops before the requested stage is refused with what is missing
    with pytest.raises(ResweepError, match="lacks"):
        ResNetFeatures("resnet18", "layer2", weights=no_weights / "checkpoints" / path.name)


def test_distance_gaps_separate_images_by_their_noise_level():
    from resweep.losses.distribution_distances import DistributionDistance
    from resweep.methods.rcl import distance_gaps, noise_gaps

    g = torch.Generator().manual_seed(0)
    clean = torch.full((4, 3, 32, 32), 0.5)
    sigmas = torch.tensor([0.01, 0.03, 0.06, 0.1]).view(-1, 1, 1, 1)
    noisy = clean + sigmas * torch.randn(clean.shape, generator=g)

    class Flat(torch.nn.Module):  # the clean image is flat: this 'network' returns it for any crop
        def forward(self, x):
            return torch.full_like(x, 0.5)

    gaps = distance_gaps(Flat(), noisy, DistributionDistance("emd"), 16, 8, torch.Generator().manual_seed(1))
    assert gaps.shape == (12,) and (gaps > 0).all()
    # the true noise on the same crops gives the same gaps
    truth = noise_gaps(noisy - clean, DistributionDistance("emd"), 16, 8, torch.Generator().manual_seed(1))
    assert torch.allclose(truth, gaps, atol=1e-6)
    identity = distance_gaps(torch.nn.Identity(), noisy, DistributionDistance("emd"), 16, 8,
                             torch.Generator().manual_seed(1))
    assert torch.equal(identity, torch.zeros(12))  # no residual: nothing to tell apart
