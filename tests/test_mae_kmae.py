"""KMAE weights: both file layouts (saved here by the test), the search order, the refusal."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch

from resweep.config import ExperimentConfig
from resweep.errors import WeightsNotFoundError
from resweep.methods import MethodContext, World
from resweep.models.mae_vit import VIT_MAE_ARCHS, MaeEncoder, VitMae
from resweep.models.mae_weights import (
    WEIGHTS_ENV,
    load_mae_encoder,
    resolve_mae_weights,
)

from conftest import tiny_config_dict

TINY = VIT_MAE_ARCHS["tiny"]


@pytest.fixture
def no_caches(tmp_path, monkeypatch):
    """Empty torch hub / Hugging Face caches and no $RESWEEP_MAE_WEIGHTS."""
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-hub"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    yield tmp_path
    torch.hub.set_dir(old)


def _timm_vit():
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(3)
    return VisionTransformer(
        img_size=TINY.img_size, patch_size=TINY.patch_size, embed_dim=TINY.embed_dim,
        depth=TINY.depth, num_heads=TINY.num_heads, num_classes=0, global_pool="",
        qkv_bias=True, norm_layer=functools.partial(torch.nn.LayerNorm, eps=1e-6),
    ).eval()


def test_timm_layout_safetensors_loads_and_matches_timm(tmp_path):
    from safetensors.torch import save_file

    vit = _timm_vit()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in vit.state_dict().items()}, str(path))
    encoder = load_mae_encoder(path, TINY).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        want = vit.forward_features((x - encoder.mean) / encoder.std)
    torch.testing.assert_close(encoder(x), want, rtol=1e-5, atol=1e-5)


def test_mae_authors_layout_with_decoder_loads_the_encoder(tmp_path):
    torch.manual_seed(4)
    full = VitMae(TINY)
    state = {k.removeprefix("encoder."): v for k, v in full.state_dict().items()}
    assert any(k.startswith("decoder_") for k in state) and "mask_token" in state
    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": state, "epoch": 799}, path)
    encoder = load_mae_encoder(path, TINY)
    for key, value in full.encoder.state_dict().items():
        assert torch.equal(encoder.state_dict()[key], value), key


def test_wrong_size_file_names_the_mismatch(tmp_path):
    path = tmp_path / "w.pth"
    torch.save({"model": MaeEncoder(TINY).state_dict()}, path)
    with pytest.raises(Exception, match="does not fit|shape"):
        load_mae_encoder(path)  # ViT-B/16 expected


def test_search_order_env_then_hub_caches(no_caches, monkeypatch):
    hub = Path(torch.hub.get_dir()) / "checkpoints" / "mae_pretrain_vit_base.pth"
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"x")
    assert resolve_mae_weights() == hub
    snap = no_caches / "hf-hub" / "models--timm--vit_base_patch16_224.mae" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model.safetensors").write_bytes(b"x")
    hub.unlink()
    assert resolve_mae_weights() == snap / "model.safetensors"
    env_file = no_caches / "mine.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(env_file))
    assert resolve_mae_weights() == env_file


def test_refusal_without_a_file_says_what_to_do(no_caches):
    with pytest.raises(WeightsNotFoundError) as info:
        resolve_mae_weights()
    text = str(info.value)
    assert WEIGHTS_ENV in text and "mae_pretrain_vit_base.pth" in text
    assert "kmae_stand_in" in text and "nothing is downloaded" in text
    with pytest.raises(WeightsNotFoundError, match="not found"):
        resolve_mae_weights(no_caches / "typo.pth")  # an explicit path is never replaced


def _kmae_method(**knobs):
    from resweep.methods.mae_loss import MaeLoss

    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": {"variant": "kmae", **knobs}}))
    context = MethodContext(config=cfg, model=torch.nn.Identity(), task=None, world=World(),  # type: ignore[arg-type]
                            cache_dir=Path("."), log=lambda _m: None)
    return cfg, MaeLoss(cfg.methods["mae_loss"], context)


def test_kmae_method_refuses_without_weights_and_declares_no_stage(no_caches):
    with pytest.raises(WeightsNotFoundError):
        _kmae_method()
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": {"variant": "kmae"}}))
    assert cfg.methods["mae_loss"].stages(cfg) == {}


def test_kmae_stand_in_is_pretrained_on_out_of_task_photographs(no_caches, tmp_path):
    cfg = ExperimentConfig.from_dict(tiny_config_dict(**{
        "data.train": {"kind": "folder", "path": str(tmp_path)},
        "methods.mae_loss": {"variant": "kmae", "kmae_stand_in": True},
    }))
    stage = cfg.methods["mae_loss"].stages(cfg)["encoder"]
    assert stage.variant == "vit" and stage.data["kind"] == "demo"  # not the task's folder


def test_kmae_method_uses_the_file_when_present(no_caches, monkeypatch, tmp_path):
    # a real ViT-B/16 file would be 330 MB: check the wiring with the loader pointed at TINY
    import resweep.models.mae_weights as weights_mod

    path = tmp_path / "mae_pretrain_vit_base.pth"
    torch.save({"model": MaeEncoder(TINY).state_dict()}, path)
    monkeypatch.setenv(WEIGHTS_ENV, str(path))
    monkeypatch.setattr(weights_mod, "VIT_MAE_ARCHS", {**VIT_MAE_ARCHS, "base": TINY})
    _, method = _kmae_method()
    assert isinstance(method.encoder, MaeEncoder) and method.encoder.arch == TINY
    assert any(str(path) in note for note in method.notes())
