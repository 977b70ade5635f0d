"""The video MAE as a loss: mae_loss variants ctmae_video / kmae_video (MAE-as-loss Tab. 5).

The reference forward below follows MAE-ST's ``models_mae.forward_encoder`` from a raw state
dict in float64 (separate q/k/v, position table added before the class token is prepended,
final norm, class token dropped): an implementation independent of ``VideoMaeEncoder``.
"""

from __future__ import annotations

import functools
import math
import tempfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from resweep.config import ExperimentConfig
from resweep.data.video import CLEAN_WINDOW_KEY
from resweep.errors import ConfigError, WeightsNotFoundError
from resweep.methods import MethodContext, World
from resweep.methods.mae_loss import MaeLoss
from resweep.models.mae_video import sincos_3d
from resweep.models.mae_video_weights import (
    VIDEO_WEIGHTS_ENV,
    load_video_mae_encoder,
    resolve_video_mae_weights,
)
from resweep.stages import PRODUCED, REUSED, StageContext, prepare_local
from resweep.stages.mae_video_pretrain import MaeVideoPretrainStage, produce_mae_video_pretrain
from tests.test_video_data import video_config, write_clip

from conftest import tiny_config_dict

TINY_PRETRAIN = {"arch": "tiny", "crop": 32, "steps": 1, "batch_size": 2,
                 "data": {"kind": "video_demo", "split": "all"}, "held_out_frames": 8}
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


@functools.cache
def _artifact() -> Path:
    out = Path(tempfile.mkdtemp(prefix="mae-video-test-"))
    definition = MaeVideoPretrainStage(arch="tiny", num_frames=5, crop=32, steps=1, batch_size=2,
                                       data={"kind": "video_demo", "split": "all"})
    produce_mae_video_pretrain(definition, out, StageContext(log=lambda _m: None))
    return out


def video_method(encoder_dir: Path | None, target: str = "centre", **knobs) -> MaeLoss:
    changes = {"methods": {"mae_loss": {"variant": "ctmae_video", **knobs}}}
    cfg = ExperimentConfig.from_dict({**video_config(**{"task.video": {"target": target}}), **changes,
                                      "model": {"name": "fastdvdnet_tiny", "kwargs": {"target": target}}})
    context = MethodContext(
        config=cfg, model=torch.nn.Identity(), task=None, world=World(), cache_dir=Path("."),  # type: ignore[arg-type]
        log=lambda _m: None, artifacts={"encoder": encoder_dir} if encoder_dir else {},
    )
    return MaeLoss(cfg.methods["mae_loss"], context)


# --------------------------------------------------------------------------- reference forward
def mae_st_forward(state: dict, clip: torch.Tensor, heads: int, pos: torch.Tensor, mean, std) -> torch.Tensor:
    """Tubelet tokens after the final norm, class token dropped; ``clip (B, T, 3, H, W)``."""
    sd = {k: v.double() for k, v in state.items()}
    if "blocks.0.attn.qkv.weight" in sd:  # our fused layout: split back into MAE-ST's q, k, v
        for key in [k for k in sd if ".attn.qkv." in k]:
            for name, part in zip("qkv", sd.pop(key).chunk(3, dim=0), strict=True):
                sd[key.replace("qkv", name)] = part
    t = sd["patch_embed.proj.weight" if "patch_embed.proj.weight" in sd else "proj.weight"].shape[2]
    w = sd.get("patch_embed.proj.weight", sd.get("proj.weight"))
    b = sd.get("patch_embed.proj.bias", sd.get("proj.bias"))
    x = clip.double()
    x = (x - torch.tensor(mean, dtype=torch.float64).view(1, 1, 3, 1, 1)) / torch.tensor(std, dtype=torch.float64).view(1, 1, 3, 1, 1)
    if x.shape[1] % t:
        x = torch.cat([x, x[:, -1:].expand(-1, t - x.shape[1] % t, -1, -1, -1)], dim=1)
    tokens = F.conv3d(x.transpose(1, 2), w, b, stride=w.shape[2:]).flatten(2).transpose(1, 2)
    tokens = tokens + pos.double()
    if "cls_token" in sd:
        tokens = torch.cat([(sd["cls_token"] + sd["pos_embed_class"]).expand(x.shape[0], -1, -1), tokens], 1)
    d = tokens.shape[-1]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        h = F.layer_norm(tokens, (d,), sd[p + "norm1.weight"], sd[p + "norm1.bias"], eps=1e-6)
        q, k, v = (F.linear(h, sd[p + f"attn.{n}.weight"], sd[p + f"attn.{n}.bias"]) for n in "qkv")
        split = lambda z: z.reshape(z.shape[0], z.shape[1], heads, d // heads).transpose(1, 2)  # noqa: E731
        attn = (split(q) @ split(k).transpose(-2, -1) / math.sqrt(d // heads)).softmax(-1)
        out = (attn @ split(v)).transpose(1, 2).reshape(tokens.shape)
        tokens = tokens + F.linear(out, sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"])
        h = F.layer_norm(tokens, (d,), sd[p + "norm2.weight"], sd[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
        tokens = tokens + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
    tokens = F.layer_norm(tokens, (d,), sd["norm.weight"], sd["norm.bias"], eps=1e-6)
    return tokens[:, 1:] if "cls_token" in sd else tokens


def ours_reference(method: MaeLoss, clip: torch.Tensor) -> torch.Tensor:
    enc = method.encoder
    grid = enc.grid_of(clip.shape[1], clip.shape[-2], clip.shape[-1])
    return mae_st_forward(enc.state_dict(), clip, enc.arch.num_heads, sincos_3d(enc.arch.embed_dim, grid), *IMAGENET)


# --------------------------------------------------------------------------- the loss
def test_centre_frame_loss_is_the_restored_frame_among_its_clean_neighbours():
    method = video_method(_artifact(), weight=0.7)
    assert method.distance_kind == "l1"  # loss.pixel defaults to l1
    g = torch.Generator().manual_seed(0)
    window = torch.rand(2, 5, 3, 32, 32, generator=g)
    pred = (window[:, 2] + 0.1 * torch.randn(2, 3, 32, 32, generator=g)).clamp(0, 1)
    batch = {"gt": window[:, 2], CLEAN_WINDOW_KEY: window}
    term = method.loss_terms(pred, batch, iteration=0)["mae"]
    restored = window.clone()
    restored[:, 2] = pred
    want = (ours_reference(method, window) - ours_reference(method, restored)).abs().mean()
    assert term.item() == pytest.approx(0.7 * float(want), rel=1e-4)
    # the neighbours are seen (through attention only, weakly in a barely trained encoder): the
    # same frame among other neighbours gives another distance
    other = {"gt": window[:, 2], CLEAN_WINDOW_KEY: torch.cat([window[:, :2].flip(0), window[:, 2:]], 1)}
    assert abs(method.loss_terms(pred, other, iteration=0)["mae"].item() - term.item()) > 1e-7


def test_all_frames_target_compares_the_restored_window_with_the_clean_one():
    method = video_method(_artifact(), target="all", distance="l2", layers=[0, 1])
    g = torch.Generator().manual_seed(1)
    clean = torch.rand(2, 5, 3, 32, 32, generator=g)
    restored = (clean + 0.05 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    term = method.loss_terms(restored.reshape(2, 15, 32, 32), {"gt": clean.reshape(2, 15, 32, 32)}, 0)["mae"]
    fy, fp = method.encode(clean), method.encode(restored)
    want = sum(((a.double() - b.double()) ** 2).mean() for a, b in zip(fy, fp, strict=True)) / 2
    assert term.item() == pytest.approx(float(want), rel=1e-5)
    assert len(fy) == 2 and fy[0].shape == (2, 3 * 4 * 4, 48)  # T=5 padded to 3 slots of t=2


def test_no_gradient_reaches_the_encoder_and_target_features_have_none():
    method = video_method(_artifact())
    grad_modes: list[bool] = []
    method.encoder.proj.register_forward_pre_hook(lambda _m, _i: grad_modes.append(torch.is_grad_enabled()))
    window = torch.rand(2, 5, 3, 32, 32)
    pred = torch.rand(2, 3, 32, 32, requires_grad=True)
    term = method.loss_terms(pred, {"gt": window[:, 2], CLEAN_WINDOW_KEY: window}, iteration=3)["mae"]
    term.backward()
    assert grad_modes == [False, True]  # E(y) first, without autograd; then E(ŷ)
    assert all(p.grad is None and not p.requires_grad for p in method.encoder.parameters())
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert method.state_dict() == {}  # the frozen encoder is not checkpointed


def test_patch_version_uses_identical_tubelets_for_prediction_and_target():
    method = video_method(_artifact(), patch=True, patch_mask_ratio=0.75)
    seen: list[torch.Tensor] = []
    original = method.encoder.forward_tokens

    def spy(x, ids_keep=None, blocks=None):
        seen.append(ids_keep.clone())
        return original(x, ids_keep=ids_keep, blocks=blocks)

    method.encoder.forward_tokens = spy  # type: ignore[method-assign]
    window = torch.rand(2, 5, 3, 32, 32)
    batch = {"gt": window[:, 2], CLEAN_WINDOW_KEY: window}
    assert float(method.loss_terms(window[:, 2].clone(), batch, iteration=5)["mae"]) == 0.0
    method.loss_terms(torch.rand(2, 3, 32, 32), batch, iteration=6)
    assert len(seen) == 4
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[0], seen[2])  # a fresh draw every step
    assert seen[0].shape == (2, 12)  # a quarter of the 3 x 4 x 4 = 48 tubelets kept
    assert (seen[0][0].sort().values != seen[0][1].sort().values).any()  # per clip


def test_training_run_adds_the_video_mae_term(reporter, tmp_path):
    """A real engine run: the Trainer makes the tiny video MAE through the stages layer and the
    centre-frame samples carry their clean window."""
    from resweep.engine.trainer import Trainer

    cfg = ExperimentConfig.from_dict({**video_config(**{"train.iterations": 2}), "methods": {
        "mae_loss": {"variant": "ctmae_video", "weight": 2.0, "pretrain_video": TINY_PRETRAIN}}})
    outcome = Trainer(cfg, reporter=reporter, log=lambda _m: None, cache_dir=tmp_path).fit()
    assert outcome.status == "finished"
    logged = [r for r in reporter.reports if "loss.mae" in r]
    assert logged
    for r in logged:
        assert r["loss.total"] == pytest.approx(r["loss.pixel"] + r["loss.mae"], rel=1e-5)
        assert r["loss.mae"] == pytest.approx(2.0 * r["mae_loss.feature_distance"], rel=1e-5)


# --------------------------------------------------------------------------- config
def test_a_video_variant_on_an_image_task_and_the_reverse_are_config_errors():
    with pytest.raises(ConfigError, match="'ctmae_video' is a spatiotemporal .* restores single images"):
        ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": {"variant": "ctmae_video"}}))
    with pytest.raises(ConfigError, match="'kmae' is an image MAE .* restores video"):
        ExperimentConfig.from_dict({**video_config(), "methods": {"mae_loss": {"variant": "kmae"}}})
    # switched off, the mismatch is harmless (a base config may carry the knobs)
    ExperimentConfig.from_dict(tiny_config_dict(**{"methods.mae_loss": {"variant": "ctmae_video", "enabled": False}}))


def test_ctmae_video_declares_its_stage_on_the_task_clips_and_is_made_once_for_four_trials(tmp_path):
    statuses, keys = [], set()
    for weight in (0.5, 1.0):
        for seed in (0, 1):
            cfg = ExperimentConfig.from_dict({**video_config(**{"train.seed": seed}), "methods": {"mae_loss": {
                "variant": "ctmae_video", "weight": weight, "pretrain_video": {**TINY_PRETRAIN, "data": None}}}})
            stage = cfg.stages()["mae_loss.encoder"]
            assert stage.kind == "mae_video_pretrain" and stage.num_frames == 5  # the task's window
            assert stage.data == cfg.data.train.model_dump(mode="json")  # the task's own clips
            artifacts, records = prepare_local(cfg, tmp_path / "store", scratch=tmp_path / f"s{weight}{seed}",
                                               log=lambda _m: None)
            statuses += [r.status for r in records]
            keys.add(records[0].key)
            assert (artifacts["mae_loss.encoder"] / "encoder.pt").is_file()
    assert statuses == [PRODUCED] + [REUSED] * 3
    assert len(keys) == 1


def test_a_single_training_clip_holds_out_its_last_frames(tmp_path):
    clip = write_clip(tmp_path / "one" / "only", 14)
    definition = MaeVideoPretrainStage(arch="tiny", num_frames=4, crop=32, steps=1, batch_size=2,
                                       data={"kind": "video_folder", "path": str(clip.parent)},
                                       held_out_clips=0, held_out_frames=6)
    metrics = produce_mae_video_pretrain(definition, tmp_path / "out", StageContext(log=lambda _m: None))
    assert math.isfinite(metrics["heldout_masked_loss"])
    import json

    info = json.loads((tmp_path / "out" / "mae_video.json").read_text())
    assert info["train_clips"] == ["only[0:8]"] and info["held_out_clips"] == ["only[8:14]"]
    with pytest.raises(ValueError, match="held_out_frames >= num_frames"):
        MaeVideoPretrainStage(data={"kind": "video_demo"}, held_out_clips=0, held_out_frames=0)


# --------------------------------------------------------------------------- KMAE-video
@pytest.fixture
def no_video_weights(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "torch-hub"))
    monkeypatch.delenv(VIDEO_WEIGHTS_ENV, raising=False)
    yield tmp_path
    torch.hub.set_dir(old)


def mae_st_checkpoint(width: int = 48, depth: int = 2, t: int = 2, p: int = 8, grid=(2, 4, 4), joint=False) -> dict:
    """A random state dict in MAE-ST's pretraining layout (encoder + decoder keys)."""
    g = torch.Generator().manual_seed(7)
    r = lambda *s: 0.2 * torch.randn(*s, generator=g)  # noqa: E731
    gt, gh, gw = grid
    sd = {"patch_embed.proj.weight": r(width, 3, t, p, p), "patch_embed.proj.bias": r(width),
          "cls_token": r(1, 1, width), "norm.weight": 1 + r(width), "norm.bias": r(width),
          "mask_token": r(1, 1, 16), "decoder_embed.weight": r(16, width), "decoder_pred.bias": r(3 * p * p)}
    if joint:
        sd["pos_embed"] = r(1, 1 + gt * gh * gw, width)
    else:
        sd.update(pos_embed_spatial=r(1, gh * gw, width), pos_embed_temporal=r(1, gt, width), pos_embed_class=r(1, 1, width))
    for i in range(depth):
        b = f"blocks.{i}."
        for n in "qkv":
            sd[b + f"attn.{n}.weight"], sd[b + f"attn.{n}.bias"] = r(width, width), r(width)
        sd.update({b + "attn.proj.weight": r(width, width), b + "attn.proj.bias": r(width),
                   b + "norm1.weight": 1 + r(width), b + "norm1.bias": r(width),
                   b + "norm2.weight": 1 + r(width), b + "norm2.bias": r(width),
                   b + "mlp.fc1.weight": r(4 * width, width), b + "mlp.fc1.bias": r(4 * width),
                   b + "mlp.fc2.weight": r(width, 4 * width), b + "mlp.fc2.bias": r(width)})
    return sd


@pytest.mark.parametrize("joint", [False, True])
def test_mae_st_layout_loads_and_matches_mae_st_forward(tmp_path, joint):
    sd = mae_st_checkpoint(joint=joint, grid=(8, 4, 4) if joint else (2, 4, 4))
    torch.save({"model": sd, "epoch": 3}, tmp_path / "mae_st.pth")
    encoder = load_video_mae_encoder(tmp_path / "mae_st.pth", num_heads=4).eval()
    a = encoder.arch
    assert (a.embed_dim, a.depth, a.tubelet_frames, a.patch_size, a.cls_token) == (48, 2, 2, 8, True)
    assert a.pos_grid == ((8, 4, 4) if joint else (2, 4, 4))  # a joint table is split as 8 time slots
    clip = torch.rand(2, 4, 3, 32, 32) if not joint else torch.rand(1, 16, 3, 32, 32)
    if joint:
        pos, sd["pos_embed_class"] = sd["pos_embed"][:, 1:], sd["pos_embed"][:, :1]
    else:
        pos = sd["pos_embed_spatial"].repeat(1, 2, 1) + sd["pos_embed_temporal"].repeat_interleave(16, dim=1)
    ref = mae_st_forward({k: v for k, v in sd.items() if not k.startswith(("decoder", "mask"))}, clip, 4, pos,
                         (0.45,) * 3, (0.225,) * 3)
    with torch.no_grad():
        got = encoder.forward_tokens(clip)[0][:, encoder.num_prefix_tokens:]
    assert torch.allclose(got.double(), ref, atol=1e-4)
    with torch.no_grad():  # another clip size: the learnt tables are resampled to its grid
        assert encoder.forward_tokens(torch.rand(1, 6, 3, 24, 40))[0].shape == (1, 1 + 3 * 3 * 5, 48)


def test_kmae_video_refuses_without_a_file_and_uses_one_when_present(no_video_weights, monkeypatch):
    with pytest.raises(WeightsNotFoundError, match=VIDEO_WEIGHTS_ENV) as err:
        resolve_video_mae_weights()
    assert "kmae_stand_in" in str(err.value) and "mae_pretrain_vit_large_k400.pth" in str(err.value)
    with pytest.raises(WeightsNotFoundError):
        video_method(None, variant="kmae_video")
    stand_in = ExperimentConfig.from_dict({**video_config(), "methods": {"mae_loss": {
        "variant": "kmae_video", "kmae_stand_in": True}}})
    stage = stand_in.stages()["mae_loss.encoder"]
    assert stage.data["kind"] == "video_demo"  # other clips than the task's
    method = video_method(_artifact(), variant="kmae_video", kmae_stand_in=True)
    assert any("KMAE-VIDEO STAND-IN" in n and "not the paper's" in n for n in method.notes())
    path = no_video_weights / "torch-hub" / "checkpoints" / "mae_pretrain_vit_large_k400.pth"
    path.parent.mkdir(parents=True)
    torch.save({"model_state": mae_st_checkpoint(width=128)}, path)
    assert stand_in.stages() == {}  # a file is found: no stand-in to pretrain
    method = video_method(None, variant="kmae_video", kmae_stand_in=True)
    assert method.encoder.arch.num_heads == 2 and method.encoder.arch.pixel_mean == (0.45,) * 3
    assert method.notes() == [f"mae_loss: KMAE-video encoder from {path}"]
    window = torch.rand(1, 5, 3, 32, 32)
    term = method.loss_terms(torch.rand(1, 3, 32, 32), {"gt": window[:, 2], CLEAN_WINDOW_KEY: window}, 0)
    assert term["mae"].item() > 0
