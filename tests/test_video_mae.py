"""Spatiotemporal MAE: per-tubelet masking, tubelet order, the mae_video_pretrain stage."""

from __future__ import annotations

import pytest
import torch

from resweep.models.mae_video import VIDEO_MAE_ARCHS, VideoMae, random_tubelet_keep_ids
from resweep.stages import StageContext
from resweep.stages.mae_video_pretrain import (
    ENCODER_FILE,
    MaeVideoPretrainStage,
    load_video_encoder,
    produce_mae_video_pretrain,
)


def tiny_mae(seed: int = 0) -> VideoMae:
    torch.manual_seed(seed)
    return VideoMae(VIDEO_MAE_ARCHS["tiny"]).eval()  # t=2, p=8


def test_masking_is_per_tubelet_and_random_across_time():
    model = tiny_mae()
    frames, side = 6, 32  # 3 time slots x 4 x 4 tubelets = 48
    b = 16
    video = torch.rand(b, frames, 3, side, side)
    _, _, mask = model(video, mask_ratio=0.9, generator=torch.Generator().manual_seed(1))
    assert mask.shape == (b, 48)
    assert torch.all(mask.sum(dim=1) == 48 - int(48 * 0.1))  # 43 hidden, 4 visible, every sample
    pixels = model.pixel_mask(mask, frames, side, side)  # (B, T, H, W)
    blocks = pixels.reshape(b, 3, 2, 4, 8, 4, 8)
    # every tubelet (2 frames x 8 x 8 pixels) is hidden or seen as a whole
    assert torch.all(blocks.amin(dim=(2, 4, 6)) == blocks.amax(dim=(2, 4, 6)))
    # random per tubelet, not "tube" masking: the spatial pattern changes between time slots
    slots = blocks.amax(dim=(2, 4, 6))  # (B, 3, 4, 4)
    assert any(not torch.equal(slots[i, 0], slots[i, 1]) for i in range(b))
    assert len({tuple(m.nonzero().flatten().tolist()) for m in mask}) == b  # per sample


def test_encoder_sees_only_the_visible_tubelets():
    model = tiny_mae()
    video = torch.rand(2, 4, 3, 32, 32)
    ids_keep, _ = random_tubelet_keep_ids(2, 32, 0.9, torch.Generator().manual_seed(0))
    mask = torch.ones(2, 32)
    mask.scatter_(1, ids_keep, 0.0)
    hidden = model.pixel_mask(mask, 4, 32, 32).bool().unsqueeze(2).expand_as(video)
    with torch.no_grad():
        before = model.encoder.forward_tokens(video, ids_keep=ids_keep)[0]
        changed = video.clone()
        changed[hidden] = torch.rand(int(hidden.sum()))
        after = model.encoder.forward_tokens(changed, ids_keep=ids_keep)[0]
        assert torch.allclose(before, after, atol=1e-6)  # hidden pixels do not reach it
        touched = video.clone()
        touched[~hidden] = torch.rand(int((~hidden).sum()))
        assert not torch.allclose(before, model.encoder.forward_tokens(touched, ids_keep=ids_keep)[0])


def test_tubelet_targets_follow_the_token_order():
    model = tiny_mae()
    video = torch.rand(1, 4, 3, 16, 24, requires_grad=True)  # grid 2 x 2 x 3 = 12 tokens
    tokens = model.encoder.proj(model.encoder.prepare(video).transpose(1, 2)).flatten(2).transpose(1, 2)
    target = model.tubelets(video)
    for i in (0, 5, 11):
        onehot = torch.zeros(1, 12)
        onehot[0, i] = 1
        region = model.pixel_mask(onehot, 4, 16, 24).bool()[0]  # (T, H, W)
        grad_token = torch.autograd.grad(tokens[0, i].sum(), video, retain_graph=True)[0][0]
        grad_target = torch.autograd.grad(target[0, i].sum(), video, retain_graph=True)[0][0]
        for grad in (grad_token, grad_target):
            reached = grad.abs().sum(dim=1) > 0  # (T, H, W)
            assert torch.equal(reached, region), f"token {i} does not cover its own tubelet"


def test_video_mae_pretraining_beats_the_tubelet_mean_on_held_out_clips(tmp_path):
    definition = MaeVideoPretrainStage(
        arch="tiny", num_frames=4, crop=32, steps=200, batch_size=8, lr=2e-3,
        data={"kind": "video_demo", "split": "all"}, held_out_clips=2, heldout_windows_per_clip=6,
    )
    logs: list[str] = []
    metrics = produce_mae_video_pretrain(definition, tmp_path, StageContext(log=logs.append))
    assert metrics["heldout_masked_loss"] < 0.9 * metrics["heldout_tubelet_mean_loss"], metrics
    assert "held-out masked loss" in logs[-1]
    encoder = load_video_encoder(tmp_path)
    saved = torch.load(tmp_path / ENCODER_FILE, weights_only=True)
    assert all(torch.equal(v, encoder.state_dict()[k]) for k, v in saved.items())
    assert encoder(torch.rand(1, 5, 3, 32, 32)).shape == (1, 3 * 16, 48)  # T=5 padded to 6


def test_a_video_set_too_small_for_the_held_out_split_is_refused(tmp_path):
    definition = MaeVideoPretrainStage(arch="tiny", steps=1, data={"kind": "video_demo", "split": "eval"},
                                       held_out_clips=2)
    with pytest.raises(ValueError, match="has 2 clip\\(s\\); it needs more than held_out_clips=2"):
        produce_mae_video_pretrain(definition, tmp_path, StageContext())


def test_encoder_stops_after_the_deepest_block_it_reads():
    model = tiny_mae()  # 2 blocks
    encoder = model.encoder
    assert len(encoder.blocks) == 2
    calls = [0, 0]
    for i, block in enumerate(encoder.blocks):
        block.register_forward_hook(lambda _m, _i, _o, i=i: calls.__setitem__(i, calls[i] + 1))
    video = torch.rand(2, 4, 3, 32, 32)
    with torch.no_grad():
        early = encoder.forward_tokens(video, blocks=[0])[0]
        assert calls == [1, 0]  # the later block is not run
        # the same tokens as an independent run through the first block by hand
        reference = encoder.blocks[0](encoder.embed(video))
        assert torch.equal(early, reference)
        calls[:] = [0, 0]
        last = encoder.forward_tokens(video, blocks=[0, -1])
        assert calls == [1, 1]
        assert torch.equal(last[0], early)
        assert torch.equal(last[1], encoder.blocks[1](reference))
