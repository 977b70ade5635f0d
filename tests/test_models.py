"""Model zoo: registry, shapes for any input size, published parameter counts, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resweep.errors import ConfigError, RegistryError
from resweep.models import create_model, list_models, model_info, register_model
from resweep.models.common import pad_to_multiple
from resweep.models.registry import MODELS
from resweep.models.swinir import (
    WindowAttention,
    shifted_window_mask,
    window_partition,
    window_reverse,
)

TINY = ["edsr_tiny", "rcan_tiny", "swinir_tiny", "dncnn_tiny", "unet_tiny", "sr_residual_tiny"]
FULL = ["edsr_baseline", "edsr", "rcan", "swinir_light", "dncnn", "unet", "sr_residual"]
# multi-frame models take a window of frames (+ noise map), not one image: tests/test_video_model.py
VIDEO_TINY = ["fastdvdnet_tiny"]


@pytest.fixture(autouse=True)
def _one_thread():
    # CI and dev machines are shared: keep each test on one core.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def scales_of(name: str) -> list[int]:
    scales = model_info(name)["scales"]
    return [s for s in (1, 2, 3, 4) if scales is None or s in scales]


def test_registered_names():
    names = list_models()
    assert set(TINY + FULL) <= set(names)
    assert list_models("*_tiny") == sorted(TINY + VIDEO_TINY)


@pytest.mark.parametrize("name", list_models())
def test_every_model_builds(name):
    # The meta device builds without allocating, so the 40M-parameter EDSR is free here.
    scale = max(scales_of(name))
    with torch.device("meta"):
        model = create_model(name, scale=scale)
    assert model.arch_name == name
    assert model.scale == scale
    assert isinstance(model.last_layer, nn.Conv2d)
    assert getattr(model, model.last_layer_name) is model.last_layer
    info = model_info(name)
    assert info["name"] == name and info["task"] in ("sr", "denoise", "video_denoise")


# Published sizes: EDSR paper (baseline 1.37M, x2), RCAN paper (~15.4M, x2),
# SwinIR paper lightweight (~0.9M: 878K-930K depending on what is counted), DnCNN ~0.56M.
@pytest.mark.parametrize(
    ("name", "scale", "expected", "rel_tol"),
    [
        ("edsr_baseline", 2, 1.37e6, 0.01),
        ("edsr", 2, 40.7e6, 0.01),
        ("edsr", 4, 43.1e6, 0.01),
        ("rcan", 2, 15.4e6, 0.01),
        ("swinir_light", 2, 0.905e6, 0.03),
        ("dncnn", 1, 0.558e6, 0.01),
    ],
)
def test_full_size_param_counts(name, scale, expected, rel_tol):
    with torch.device("meta"):
        model = create_model(name, scale=scale)
    assert n_params(model) == pytest.approx(expected, rel=rel_tol)


@pytest.mark.parametrize("name", TINY)
def test_tiny_variants_are_tiny(name):
    for scale in scales_of(name):
        assert 2_000 <= n_params(create_model(name, scale=scale)) <= 60_000


@pytest.mark.parametrize("name", TINY)
def test_tiny_output_shapes_any_size(name):
    torch.manual_seed(0)
    for scale in scales_of(name):
        model = create_model(name, scale=scale).eval()
        for h, w in [(16, 16), (13, 17), (5, 7)]:
            x = torch.rand(2, 3, h, w)
            with torch.no_grad():
                y = model(x)
            assert y.shape == (2, 3, h * scale, w * scale), (name, scale, h, w)
            assert torch.isfinite(y).all()


def test_edsr_tiny_x8():
    model = create_model("edsr_tiny", scale=8).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 5, 7))
    assert y.shape == (1, 3, 40, 56)


@pytest.mark.parametrize("name", ["edsr_baseline", "rcan", "swinir_light", "dncnn", "unet"])
def test_full_size_forward(name):
    model = create_model(name, scale=max(scales_of(name)[:2])).eval()
    with torch.no_grad():
        y = model(torch.rand(1, 3, 11, 9))
    assert y.shape == (1, 3, 11 * model.scale, 9 * model.scale)


def test_grayscale_input():
    for name in TINY:
        scale = max(scales_of(name)[:2])
        model = create_model(name, scale=scale, in_channels=1).eval()
        with torch.no_grad():
            assert model(torch.rand(1, 1, 9, 10)).shape == (1, 1, 9 * scale, 10 * scale)


@pytest.mark.parametrize("name", ["dncnn_tiny", "unet_tiny", "swinir_tiny"])
def test_residual_models_start_near_identity(name):
    # Residual restorers output input + correction; at init the correction is small, so
    # the output stays close to the [0, 1] input instead of anywhere.
    torch.manual_seed(0)
    model = create_model(name).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        y = model(x)
    assert (y - x).abs().mean() < 0.5


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_sr_residual_starts_as_bicubic_and_learns_only_the_residual(scale):
    # near-zero last layer: the untrained network is its skip (the input at scale 1, PyTorch
    # bicubic otherwise) up to a small correction, yet gradients reach every layer
    torch.manual_seed(0)
    model = create_model("sr_residual_tiny", scale=scale)
    x = torch.rand(2, 3, 11, 13)
    expected = x if scale == 1 else torch.nn.functional.interpolate(x, scale_factor=scale, mode="bicubic")
    correction = (model(x) - expected).abs()
    assert 0 < correction.max() < 0.02
    model(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", TINY)
def test_gradient_flows(name):
    torch.manual_seed(0)
    scale = max(scales_of(name)[:2])
    model = create_model(name, scale=scale).train()
    x = torch.rand(2, 3, 12, 10)
    target = torch.rand(2, 3, 12 * scale, 10 * scale)
    nn.functional.l1_loss(model(x), target).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


@pytest.mark.parametrize("name", TINY)
def test_deterministic_with_seed(name):
    x = torch.rand(1, 3, 13, 11, generator=torch.Generator().manual_seed(1))
    outputs, states = [], []
    for _ in range(2):
        torch.manual_seed(123)
        model = create_model(name).eval()
        states.append(model.state_dict())
        with torch.no_grad():
            outputs.append(model(x))
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    assert torch.equal(outputs[0], outputs[1])


def test_last_layer_can_be_replaced():
    model = create_model("unet_tiny", scale=2).eval()
    old = model.last_layer
    setattr(
        model, model.last_layer_name, nn.Conv2d(old.in_channels, old.out_channels, 3, padding=1)
    )
    nn.init.zeros_(model.last_layer.weight)
    nn.init.zeros_(model.last_layer.bias)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        y = model(x)
    # A zero residual leaves exactly the bicubic upsampling: the new layer is the one used.
    expected = nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    assert torch.allclose(y, expected)


def test_size_overrides():
    model = create_model("edsr_tiny", scale=2, n_blocks=3, n_feats=8)
    assert len(model.body) == 4  # 3 blocks + the conv closing the long skip
    assert model.head.out_channels == 8
    swin = create_model("swinir_tiny", embed_dim=12, depths=[1, 1, 1], num_heads=[3, 3, 3])
    assert len(swin.layers) == 3


def test_unknown_model_name_suggests_close_matches():
    with pytest.raises(RegistryError, match="edsr_tiny"):
        create_model("edsr_tinny")
    with pytest.raises(RegistryError, match="swinir_light"):
        model_info("swinir_lite")


def test_unknown_argument_names_model_and_argument():
    with pytest.raises(ConfigError, match=r"edsr_tiny.*'n_featz'") as err:
        create_model("edsr_tiny", n_featz=8)
    assert isinstance(err.value, TypeError)


@pytest.mark.parametrize(
    ("name", "scale"), [("dncnn_tiny", 2), ("edsr_tiny", 5), ("unet_tiny", 0), ("rcan_tiny", 2.0)]
)
def test_bad_scale_is_a_config_error(name, scale):
    with pytest.raises(ConfigError, match="scale"):
        create_model(name, scale=scale)


def test_inconsistent_sizes_are_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        create_model("swinir_tiny", embed_dim=25)
    with pytest.raises(ConfigError, match="depths"):
        create_model("swinir_tiny", depths=[2, 2, 2])


def test_register_custom_model(monkeypatch):
    # Work on a copy of the registry so the test model does not leak into other tests.
    monkeypatch.setattr(MODELS, "_items", dict(MODELS._items))

    @register_model("test_identity_net", width=2)
    class IdentityNet(nn.Module):
        def __init__(self, scale: int = 1, in_channels: int = 3, width: int = 4) -> None:
            super().__init__()
            self.width = width
            self.last_layer = nn.Conv2d(in_channels, in_channels, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.last_layer(x)

    assert create_model("test_identity_net").width == 2
    model = create_model("test_identity_net", width=8)
    assert model.width == 8
    assert model.arch_name == "test_identity_net" and model.scale == 1
    assert "test_identity_net" in list_models()
    with pytest.raises(TypeError, match="depth"):
        create_model("test_identity_net", depth=2)


def test_window_attention_matches_reference():
    # Explicit softmax(q k^T / sqrt(d) + bias + mask) v, as in the original SwinIR code.
    torch.manual_seed(0)
    ws, dim, heads = 4, 12, 3
    attn = WindowAttention(dim, ws, heads).eval()
    x = torch.roll(torch.randn(2, 8, 8, dim), shifts=(-2, -2), dims=(1, 2))
    windows = window_partition(x, ws)  # (B, nW, N, C)
    mask = shifted_window_mask(8, 8, ws, ws // 2)
    b, nw, n, c = windows.shape
    qkv = attn.qkv(windows.reshape(b * nw, n, c)).reshape(b * nw, n, 3, heads, c // heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    bias = attn.relative_position_bias_table[attn.relative_position_index.view(-1)]
    scores = (q * (c // heads) ** -0.5) @ k.transpose(-2, -1)
    scores = scores + bias.view(n, n, heads).permute(2, 0, 1)
    scores = (scores.view(b, nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    reference = attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(b * nw, n, c))
    with torch.no_grad():
        out = attn(windows, mask)
    torch.testing.assert_close(out.reshape(b * nw, n, c), reference)
    torch.testing.assert_close(window_reverse(windows, ws, 8, 8), x)
    # The offset (0, 0) shares one bias entry: the diagonal of the index is constant.
    assert attn.relative_position_index.diagonal().unique().numel() == 1


def test_pad_to_multiple_small_input_falls_back_to_replicate():
    x = torch.rand(1, 3, 3, 5)
    padded, size = pad_to_multiple(x, 8)
    assert padded.shape == (1, 3, 8, 8) and size == (3, 5)
    assert torch.equal(padded[..., :3, :5], x)
