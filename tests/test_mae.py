"""MAE as a learned loss: networks, the mae_pretrain stage and the mae_loss method."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resweep.config import ExperimentConfig
from resweep.methods import MethodContext, World
from resweep.methods.mae_loss import MaeLoss
from resweep.models.mae_conv import region_mask
from resweep.models.mae_vit import VIT_MAE_ARCHS, MaeEncoder, VitMae
from resweep.stages import PRODUCED, REUSED, StageContext, prepare_local
from resweep.stages.mae_pretrain import (
    MaePretrainStage,
    load_autoencoder,
    load_encoder,
    produce_mae_pretrain,
)

from conftest import tiny_config_dict


def make_artifact(tmp: Path, variant: str, steps: int = 1, **kw) -> tuple[Path, dict]:
    definition = MaePretrainStage(
        variant=variant, arch="tiny", steps=steps, batch_size=4, crop=32,
        data={"kind": "demo", "split": "all"}, held_out_images=2, heldout_crops_per_image=4, **kw,
    )
    out = tmp / f"{variant}-{steps}"
    metrics = produce_mae_pretrain(definition, out, StageContext(log=lambda _m: None))
    return out, metrics


@functools.cache
def _artifact(variant: str) -> Path:
    import tempfile

    return make_artifact(Path(tempfile.mkdtemp(prefix="mae-test-")), variant)[0]


def build_method(encoder_dir: Path | None, pixel: str = "l1", **knobs) -> MaeLoss:
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": knobs, "loss.pixel": pixel}))
    model = torch.nn.Identity()
    context = MethodContext(
        config=cfg, model=model, task=None, world=World(), cache_dir=Path("."),  # type: ignore[arg-type]
        log=lambda _m: None, artifacts={"encoder": encoder_dir} if encoder_dir else {},
    )
    return MaeLoss(cfg.methods["mae_loss"], context)


# --------------------------------------------------------------------------- networks
def test_vit_encoder_matches_timm_vision_transformer():
    """Same weights in timm's own ViT give the same final tokens (an independent forward)."""
    from timm.models.vision_transformer import VisionTransformer

    arch = VIT_MAE_ARCHS["tiny"]
    torch.manual_seed(0)
    ours = MaeEncoder(arch).eval()
    ref = VisionTransformer(
        img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
        depth=arch.depth, num_heads=arch.num_heads, num_classes=0, global_pool="",
        qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()
    ref.load_state_dict(ours.state_dict())
    x = torch.rand(2, 3, 32, 32)
    normed = (x - ours.mean) / ours.std
    torch.testing.assert_close(ours(x), ref.forward_features(normed), rtol=1e-5, atol=1e-5)


def test_vit_encoder_resamples_position_embeddings_for_other_sizes():
    encoder = MaeEncoder(VIT_MAE_ARCHS["tiny"]).eval()
    out = encoder(torch.rand(1, 3, 48, 64))  # 6x8 patches from a 4x4 grid
    assert out.shape == (1, 1 + 48, 32)
    odd = encoder(torch.rand(1, 3, 30, 41))  # padded to whole patches
    assert odd.shape == (1, 1 + 4 * 6, 32)


def test_vit_mae_masks_the_ratio_and_the_loss_counts_masked_patches_only():
    torch.manual_seed(0)
    model = VitMae(VIT_MAE_ARCHS["tiny"], norm_pix_loss=False)
    x = torch.rand(3, 3, 32, 32)
    loss, pred, mask = model(x, mask_ratio=0.75, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (3, 16) and mask.sum(dim=1).tolist() == [12.0] * 3
    per_patch = ((pred - model.target(x)) ** 2).mean(-1)
    torch.testing.assert_close(loss, per_patch[mask.bool()].mean())


def test_region_mask_blanks_exactly_the_ratio_of_regions():
    mask = region_mask(4, 32, 40, 8, 0.75, torch.Generator().manual_seed(0))
    cells = mask[:, 0, ::8, ::8]  # one value per region (4 x 5 regions)
    assert cells.shape == (4, 4, 5)
    assert cells.sum(dim=(1, 2)).tolist() == [15.0] * 4
    # constant within each region
    up = cells.repeat_interleave(8, 1).repeat_interleave(8, 2)
    assert torch.equal(up, mask[:, 0])


# --------------------------------------------------------------------------- pretraining stage
@pytest.mark.parametrize("variant", ["vit", "conv"])
def test_pretraining_beats_predicting_each_patch_mean_on_held_out_images(tmp_path, variant):
    # 150 steps at batch 4: MAE's rule (1.5e-4 x 4 / 256) would barely move a tiny MAE
    out, metrics = make_artifact(tmp_path, variant, steps=150, lr=1e-3)
    model = load_autoencoder(out).eval()
    # held-out crops of the last two demo photographs (not trained on), masks fixed by a seed
    from resweep.data.sources import DemoSource

    source = DemoSource("all")
    g = torch.Generator().manual_seed(123)
    crops = []
    for i in (len(source) - 2, len(source) - 1):
        img = source.load(i)
        for _ in range(6):
            top = int(torch.randint(0, img.shape[1] - 32, (1,), generator=g))
            left = int(torch.randint(0, img.shape[2] - 32, (1,), generator=g))
            crops.append(img[:, top : top + 32, left : left + 32])
    x = torch.stack(crops)
    with torch.no_grad():
        loss, _, mask = model(x, mask_ratio=0.75, generator=torch.Generator().manual_seed(7))
        if variant == "vit":
            target = model.target(x)  # (B, L, p*p*3), each patch normalised
            mean_pred = target.mean(-1, keepdim=True)
            ref = (((target - mean_pred) ** 2).mean(-1) * mask).sum() / mask.sum()
        else:
            target = model.target(x)  # (B, 3, H, W), each 4x4 region normalised
            r = model.arch.region_size
            region_mean = F.avg_pool2d(target.mean(1, keepdim=True), r)
            mean_pred = region_mean.repeat_interleave(r, 2).repeat_interleave(r, 3)
            ref = (((target - mean_pred) ** 2).mean(1, keepdim=True) * mask).sum() / mask.sum()
    assert float(loss) < 0.8 * float(ref)
    # the producer's own held-out numbers say the same
    assert metrics["heldout_masked_loss"] < metrics["heldout_patch_mean_loss"]
    assert set(metrics) >= {"final_train_loss", "heldout_masked_loss", "heldout_patch_mean_loss"}


def test_stage_definition_round_trips_and_rejects_bad_crops():
    import yaml

    d = MaePretrainStage(variant="conv", arch="tiny", crop=32, data={"kind": "demo"})
    again = MaePretrainStage.model_validate(yaml.safe_load(yaml.safe_dump(d.model_dump(mode="json"))))
    assert again == d
    with pytest.raises(ValueError, match="multiple of the patch 8"):
        MaePretrainStage(variant="vit", arch="tiny", crop=36, data={"kind": "demo"})
    with pytest.raises(ValueError, match="extra"):
        MaePretrainStage(variant="vit", arch="tiny", data={"kind": "demo"}, mask_ration=0.5)


def test_encoder_artifact_loads_back_identically(tmp_path):
    out, _ = make_artifact(tmp_path, "vit")
    encoder = load_encoder(out)
    model = load_autoencoder(out)
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(encoder.eval()(x), model.encoder.eval()(x))


# --------------------------------------------------------------------------- the loss
def _independent_vit_features(encoder: MaeEncoder, x: torch.Tensor) -> torch.Tensor:
    """Final patch tokens via timm's VisionTransformer in float64 (not our forward)."""
    from timm.models.vision_transformer import VisionTransformer

    arch = encoder.arch
    ref = VisionTransformer(
        img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
        depth=arch.depth, num_heads=arch.num_heads, num_classes=0, global_pool="",
        qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
    ).double().eval()
    ref.load_state_dict({k: v.double() for k, v in encoder.state_dict().items()})
    mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
    with torch.no_grad():
        return ref.forward_features((x.double() - mean) / std)[:, 1:]


@pytest.mark.parametrize("pixel,norm", [("l1", "l1"), ("l2", "l2")])
def test_ctmae_loss_equals_independent_computation(pixel, norm):
    method = build_method(_artifact("vit"), pixel=pixel, variant="ctmae", weight=0.7)
    assert method.distance_kind == norm
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 3, 32, 32, generator=g)
    pred = (y + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    term = method.loss_terms(pred, {"gt": y}, iteration=0)["mae"]
    fy = _independent_vit_features(method.encoder, y)
    fp = _independent_vit_features(method.encoder, pred)
    d = (fy - fp).abs().mean() if norm == "l1" else ((fy - fp) ** 2).mean()
    assert term.item() == pytest.approx(0.7 * float(d), rel=1e-4)


def test_distance_follows_the_pixel_loss_norm_unless_set():
    assert build_method(_artifact("vit"), pixel="charbonnier").distance_kind == "l1"
    assert build_method(_artifact("vit"), pixel="l1", distance="l2").distance_kind == "l2"


def test_ccmae_loss_with_block_list_equals_independent_computation():
    method = build_method(_artifact("conv"), variant="ccmae", layers=[0, 1], weight=1.0)
    enc = method.encoder
    g = torch.Generator().manual_seed(1)
    y = torch.rand(2, 3, 24, 28, generator=g)
    pred = (y + 0.05 * torch.randn(y.shape, generator=g)).clamp(0, 1)

    def stages64(x: torch.Tensor) -> list[torch.Tensor]:
        sd = {k: v.double() for k, v in enc.state_dict().items()}
        mean = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)
        h = F.gelu(F.conv2d((x.double() - mean) / std, sd["stem.weight"], sd["stem.bias"], padding=1))
        outs = []
        for s in range(len(enc.stages)):
            h = F.gelu(F.conv2d(h, sd[f"stages.{s}.0.weight"], sd[f"stages.{s}.0.bias"], stride=2, padding=1))
            r = F.gelu(F.conv2d(h, sd[f"stages.{s}.2.conv1.weight"], sd[f"stages.{s}.2.conv1.bias"], padding=1))
            h = h + F.conv2d(r, sd[f"stages.{s}.2.conv2.weight"], sd[f"stages.{s}.2.conv2.bias"], padding=1)
            outs.append(h)
        return outs

    fy, fp = stages64(y), stages64(pred)
    want = sum((a - b).abs().mean() for a, b in zip(fy, fp, strict=True)) / 2
    got = method.loss_terms(pred, {"gt": y}, iteration=0)["mae"]
    assert float(got) == pytest.approx(float(want), rel=1e-4)


@pytest.mark.parametrize("variant,artifact", [("ctmae", "vit"), ("ccmae", "conv")])
def test_no_gradient_reaches_the_loss_network_and_target_features_have_none(variant, artifact):
    method = build_method(_artifact(artifact), variant=variant)
    grad_modes: list[bool] = []
    first_layer = method.encoder.patch_embed if variant == "ctmae" else method.encoder.stem
    first_layer.register_forward_pre_hook(lambda _m, _i: grad_modes.append(torch.is_grad_enabled()))
    y = torch.rand(2, 3, 32, 32)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    term = method.loss_terms(pred, {"gt": y}, iteration=3)["mae"]
    term.backward()
    assert grad_modes == [False, True]  # E(y) first, without autograd; then E(ŷ)
    assert all(p.grad is None and not p.requires_grad for p in method.encoder.parameters())
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert method.state_dict() == {}  # the frozen encoder is not checkpointed


@pytest.mark.parametrize("variant,artifact", [("ctmae", "vit"), ("ccmae", "conv")])
def test_patch_version_uses_identical_patches_for_prediction_and_target(variant, artifact):
    method = build_method(_artifact(artifact), variant=variant, patch=True, patch_mask_ratio=0.5)
    seen: list[torch.Tensor] = []
    enc = method.encoder
    if variant == "ctmae":
        original = enc.forward_tokens

        def spy(x, ids_keep=None, blocks=None):
            seen.append(ids_keep.clone())
            return original(x, ids_keep=ids_keep, blocks=blocks)

        enc.forward_tokens = spy  # type: ignore[method-assign]
    else:
        original_f = enc.forward_features

        def spy_f(x, stages=None, mask=None, normalized=False):
            seen.append(mask.clone())
            return original_f(x, stages=stages, mask=mask, normalized=normalized)

        enc.forward_features = spy_f  # type: ignore[method-assign]
    y = torch.rand(2, 3, 32, 32)
    pred = y.clone()
    term = method.loss_terms(pred, {"gt": y}, iteration=5)["mae"]
    assert float(term) == 0.0  # identical images and identical patches: zero distance
    method.loss_terms(torch.rand(2, 3, 32, 32), {"gt": y}, iteration=6)
    assert len(seen) == 4
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[0], seen[2])  # a fresh draw every step
    if variant == "ctmae":
        assert seen[0].shape == (2, 8)  # half of the 16 patches kept
        assert (seen[0][0].sort().values != seen[0][1].sort().values).any()  # per image
    else:
        assert seen[0].mean().item() == pytest.approx(0.5)


def test_config_declares_the_encoder_stage():
    exp = ExperimentConfig.from_dict(
        tiny_config_dict(**{"methods.mae_loss": {"variant": "ccmae", "pretrain": {"arch": "tiny", "crop": 32, "steps": 5}}})
    )
    stages = exp.methods["mae_loss"].stages(exp)
    assert list(stages) == ["encoder"]
    stage = stages["encoder"]
    assert stage.kind == "mae_pretrain" and stage.variant == "conv" and stage.steps == 5
    assert stage.data == exp.data.train.model_dump(mode="json")  # the task's own training images
    off = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": {"weight": 0}}))
    assert off.methods["mae_loss"].stages(off) == {}
    # a sweep knob path exists
    from resweep.config import config_path_exists

    assert config_path_exists("methods.mae_loss.pretrain.mask_ratio")
    assert config_path_exists("methods.mae_loss.patch_mask_ratio")


def test_missing_encoder_artifact_is_a_clear_error():
    with pytest.raises(Exception, match="encoder"):
        build_method(None, variant="ctmae")


def test_bad_layer_index_is_a_clear_error():
    with pytest.raises(ValueError, match="block indices \\[5\\] out of range"):
        build_method(_artifact("vit"), variant="ctmae", layers=[5])


def test_training_run_adds_the_mae_term(reporter, tmp_path):
    """A real engine run: the Trainer makes the (tiny) encoder itself through the stages layer."""
    from resweep.engine.trainer import Trainer

    tiny_pretrain = {"arch": "tiny", "crop": 32, "steps": 2, "batch_size": 2,
                     "data": {"kind": "demo", "split": "all"}, "held_out_images": 2}
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "methods.mae_loss": {"variant": "ctmae", "weight": 2.0, "pretrain": tiny_pretrain},
        "train.iterations": 4,
    }))
    outcome = Trainer(cfg, reporter=reporter, log=lambda _m: None, cache_dir=tmp_path).fit()
    assert outcome.status == "finished"
    logged = [r for r in reporter.reports if "loss.mae" in r]
    assert logged
    for r in logged:
        assert r["loss.total"] == pytest.approx(r["loss.pixel"] + r["loss.mae"], rel=1e-5)
        assert r["loss.mae"] == pytest.approx(2.0 * r["mae_loss.feature_distance"], rel=1e-5)


def test_encoder_is_made_once_for_four_trials(tmp_path):
    """Four trials of a sweep (two λ x two seeds) share one pretraining: the first makes the
    encoder, the others reuse it from the store."""
    tiny_pretrain = {"arch": "tiny", "crop": 32, "steps": 2, "batch_size": 2,
                     "data": {"kind": "demo", "split": "all"}, "held_out_images": 2}
    statuses, folders = [], set()
    for weight in (0.5, 1.0):
        for seed in (0, 1):
            cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
                "methods.mae_loss": {"variant": "ccmae", "weight": weight, "pretrain": tiny_pretrain},
                "train.seed": seed,
            }))
            artifacts, records = prepare_local(cfg, tmp_path / "store", scratch=tmp_path / f"s{weight}{seed}",
                                                      log=lambda _m: None)
            statuses += [r.status for r in records]
            folders.add(records[0].key)
            assert (artifacts["mae_loss.encoder"] / "encoder.pt").is_file()
    assert statuses == [PRODUCED] + [REUSED] * 3
    assert len(folders) == 1
