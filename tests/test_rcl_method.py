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
from resweep.losses.distribution_distances import pairwise_emd
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


def test_loss_terms_match_reference_and_never_read_the_clean_image(no_weights):
    rcl = _build(_random_cfg(alpha=0.5, temperature=0.05))
    assert any("RANDOM" in n for n in rcl.notes())  # recorded as not the paper's setting
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(4, 3, 16, 16, generator=g)
    pred = (lq + 0.05 * torch.randn(4, 3, 16, 16, generator=g)).requires_grad_()
    terms = rcl.loss_terms(pred, NoCleanBatch(lq=lq), iteration=3)
    assert set(terms) == {"rcl_contrast", "rcl_consistency"}
    # reference: the same crops (same generator seed), residual by hand, loop over anchors
    residual = (lq - pred).detach()
    gen = torch.Generator().manual_seed(derive_seed(0, "rcl-crops", 3, 0))
    anchors, seconds = two_overlapping_crops(residual, 8, 4, gen)
    total = 0.0
    for j in range(4):
        logits = [-float(pairwise_emd(anchors[j][None], seconds[i][None])) / 0.05 for i in range(4)]
        total += -(logits[j] - math.log(sum(math.exp(v) for v in logits)))
    assert terms["rcl_contrast"].item() == pytest.approx(0.5 * total, rel=1e-5)
    with torch.no_grad():
        want = F.mse_loss(rcl.encoder(pred), rcl.encoder(lq))
    assert terms["rcl_consistency"].item() == pytest.approx(want.item(), rel=1e-5)
    sum(terms.values()).backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    metrics = rcl.metrics(3)
    assert set(metrics) >= {"positive_distance", "negative_distance", "anchor_accuracy"}


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
    from resweep.methods.rcl import distance_gaps

    g = torch.Generator().manual_seed(0)
    clean = torch.full((4, 3, 32, 32), 0.5)
    sigmas = torch.tensor([0.01, 0.03, 0.06, 0.1]).view(-1, 1, 1, 1)
    noisy = clean + sigmas * torch.randn(clean.shape, generator=g)

    class Oracle(torch.nn.Module):  # residual = the true noise
        def forward(self, x):
            return clean

    gaps = distance_gaps(Oracle(), noisy, DistributionDistance("emd"), 16, 8, torch.Generator().manual_seed(1))
    assert gaps.shape == (12,) and (gaps > 0).all()
    identity = distance_gaps(torch.nn.Identity(), noisy, DistributionDistance("emd"), 16, 8,
                             torch.Generator().manual_seed(1))
    assert torch.equal(identity, torch.zeros(12))  # no residual: nothing to tell apart
