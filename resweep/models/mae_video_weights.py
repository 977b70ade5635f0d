"""KMAE-video: the encoder of a Kinetics-pretrained spatiotemporal MAE, from a local file only.

The layout read is the public MAE-ST checkpoints' (facebookresearch/mae_st, ``models_mae.py``;
``mae_pretrain_vit_{large,huge}_k{400,600,700}.pth``): ``{"model": state_dict}`` (or
``"model_state"``) with

* ``patch_embed.proj.weight`` ``(D, 3, t, p, p)``: the tubelet embedding (a Conv3d, as ours);
* ``pos_embed_spatial`` ``(1, gh*gw, D)`` + ``pos_embed_temporal`` ``(1, gt, D)`` (the released
  ``sep_pos_embed`` default), or one joint ``pos_embed`` ``(1, [1 +] gt*gh*gw, D)``;
* ``cls_token`` and ``pos_embed_class`` (``cls_embed``, on in the released weights);
* ``blocks.N.attn.{q,k,v,proj}``: separate q/k/v projections, fused here into timm's ``qkv``;
* ``norm``; ``decoder_*`` and ``mask_token`` (the pretraining decoder) are ignored.

The architecture is read from the tensors' shapes (width, tubelet, depth, MLP ratio, grid); the
head count is not stored: it is MAE-ST's for the known widths (ViT-B 12, ViT-L 16, ViT-H 16)
and ``width / 64`` otherwise, unless given. Frames are normalised with Kinetics' statistics
(mean 0.45, std 0.225), as MAE-ST's loader does.

Files are looked for as the image KMAE's are (:mod:`resweep.losses.weights_files`): the path in
the config, then ``$RESWEEP_MAE_VIDEO_WEIGHTS``, then the torch hub cache under the released
file names. Nothing is ever downloaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from resweep.errors import ResweepError
from resweep.losses.weights_files import (
    candidate_files,
    find_weights_file,
    load_state_mapping,
    torch_hub_checkpoints,
)
from resweep.models.mae_video import VideoMaeArch, VideoMaeEncoder

VIDEO_WEIGHTS_ENV = "RESWEEP_MAE_VIDEO_WEIGHTS"
RELEASED_FILES = tuple(
    f"mae_pretrain_vit_{size}_k{k}.pth" for size in ("large", "huge") for k in (400, 600, 700)
)
KINETICS_MEAN = (0.45, 0.45, 0.45)
KINETICS_STD = (0.225, 0.225, 0.225)
# MAE-ST's head counts per width (models_mae.py: ViT-H/14 has 16 heads of 80 channels)
_HEADS = {768: 12, 1024: 16, 1280: 16}
_NOT_ENCODER = ("decoder_", "mask_token", "head.", "fc_norm.")


def candidate_video_weight_files(weights: str | Path | None = None) -> list[tuple[str, Path]]:
    cache = [("torch hub cache", torch_hub_checkpoints() / name) for name in RELEASED_FILES]
    return candidate_files(weights, VIDEO_WEIGHTS_ENV, cache)


def resolve_video_mae_weights(weights: str | Path | None = None) -> Path:
    """The local MAE-ST weights file, or :class:`WeightsNotFoundError` saying what was tried."""
    return find_weights_file(
        candidate_video_weight_files(weights),
        explicit=weights is not None,
        explicit_missing=lambda tried: (
            f"video MAE encoder weights file not found:\n{tried}\n"
            f"Give the path of an MAE-ST checkpoint (e.g. {RELEASED_FILES[0]})."
        ),
        none_found=lambda tried: (
            "no Kinetics-pretrained video MAE (MAE-ST) weights found for KMAE-video (nothing is "
            f"downloaded). Looked for:\n{tried}\n"
            "Provide one of: the path in the config (methods.mae_loss.kmae_video_weights), the "
            f"environment variable {VIDEO_WEIGHTS_ENV}=/path/to/{RELEASED_FILES[0]}, or an MAE-ST "
            f"checkpoint copied into {torch_hub_checkpoints()}. To run anyway with a video MAE "
            "pretrained here on other clips (the scikit-image demo clips), which is not the "
            "paper's setting, allow it explicitly (methods.mae_loss.kmae_stand_in: true)."
        ),
    )


def _fuse_qkv(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = dict(state)
    for key in [k for k in state if k.endswith(".attn.q.weight")]:
        prefix = key.removesuffix("q.weight")
        for kind in ("weight", "bias"):
            parts = [out.pop(f"{prefix}{x}.{kind}", None) for x in "qkv"]
            if all(p is not None for p in parts):
                out[f"{prefix}qkv.{kind}"] = torch.cat(parts, dim=0)  # type: ignore[arg-type]
            elif any(p is not None for p in parts):
                raise ResweepError(f"'{prefix}q/k/v.{kind}': some of q, k, v are missing")
    return out


def read_video_mae_state(path: str | Path, num_heads: int | None = None) -> tuple[VideoMaeArch, dict[str, torch.Tensor]]:
    """``(architecture, encoder state keyed as VideoMaeEncoder names it)`` from an MAE-ST file."""
    path = Path(path)
    raw = load_state_mapping(path, "video MAE", ("model", "model_state", "state_dict"))
    state = {
        str(k).removeprefix("module."): v for k, v in raw.items()
        if isinstance(v, torch.Tensor) and not str(k).removeprefix("module.").startswith(_NOT_ENCODER)
    }
    proj = state.get("patch_embed.proj.weight")
    if proj is None or proj.dim() != 5:
        raise ResweepError(
            f"{path} is not an MAE-ST video encoder: expected 'patch_embed.proj.weight' of shape "
            "(D, 3, t, p, p) (a Conv3d tubelet embedding), 'pos_embed_spatial'/'pos_embed_temporal' "
            "or 'pos_embed', and 'blocks.N.attn.q.weight'"
        )
    width, _, t, p, p2 = proj.shape
    if p != p2:
        raise ResweepError(f"{path}: non-square tubelets {p}x{p2} are not supported")
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    if depth == 0:
        raise ResweepError(f"{path}: no 'blocks.N.*' tensors: not a ViT encoder")
    heads = num_heads or _HEADS.get(width) or (width // 64 if width % 64 == 0 else None)
    if heads is None or width % heads:
        raise ResweepError(f"{path}: cannot tell the head count of a {width}-wide ViT; give num_heads")
    cls = "cls_token" in state
    if "pos_embed_spatial" in state and "pos_embed_temporal" in state:
        kind = "separable"
        gt = state["pos_embed_temporal"].shape[1]
        side = state["pos_embed_spatial"].shape[1]
    elif "pos_embed" in state:
        kind = "joint"
        joint = state.pop("pos_embed")
        if cls:
            state["pos_embed_class"], joint = joint[:, :1], joint[:, 1:]
        state["pos_embed"] = joint
        gt, side = None, None
    else:
        raise ResweepError(f"{path}: no position embeddings ('pos_embed_spatial'/'pos_embed_temporal' or 'pos_embed')")
    if kind == "joint":
        # a joint table does not say how its rows split into time and space: MAE-ST's default
        # 16 frames (8 tubelet slots) on square frames
        rows = state["pos_embed"].shape[1]
        for gt_try in (8, 4, 2, 16, 1):
            side_try = rows // gt_try
            if rows % gt_try == 0 and round(side_try**0.5) ** 2 == side_try:
                gt, side = gt_try, side_try
                break
        if gt is None or side is None:
            raise ResweepError(f"{path}: cannot split the {rows} joint position rows into time x square grid")
    g = round(side**0.5)
    if g * g != side:
        raise ResweepError(f"{path}: the spatial position table has {side} rows, not a square grid")
    if cls and "pos_embed_class" not in state:
        state["pos_embed_class"] = torch.zeros_like(state["cls_token"])
    hidden = state["blocks.0.mlp.fc1.weight"].shape[0] if "blocks.0.mlp.fc1.weight" in state else 4 * width
    arch = VideoMaeArch(
        tubelet_frames=t, patch_size=p, embed_dim=width, depth=depth, num_heads=heads,
        mlp_ratio=hidden / width, qkv_bias="blocks.0.attn.q.bias" in state or "blocks.0.attn.qkv.bias" in state,
        pos_embed=kind, pos_grid=(gt, g, g), cls_token=cls,
        pixel_mean=KINETICS_MEAN, pixel_std=KINETICS_STD,
    )
    state = {("proj." + k.removeprefix("patch_embed.proj.")) if k.startswith("patch_embed.proj.") else k: v
             for k, v in _fuse_qkv(state).items()}
    return arch, state


def load_video_mae_encoder(path: str | Path, num_heads: int | None = None) -> VideoMaeEncoder:
    """A :class:`VideoMaeEncoder` with an MAE-ST checkpoint's encoder weights."""
    arch, state = read_video_mae_state(path, num_heads)
    encoder = VideoMaeEncoder(arch)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ResweepError(
            f"{path} does not fit MAE-ST's encoder layout: missing {missing[:5]}"
            f"{'...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    bad = [k for k in expected if state[k].shape != expected[k].shape]
    if bad:
        raise ResweepError(f"{path}: '{bad[0]}' has shape {tuple(state[bad[0]].shape)}, "
                           f"expected {tuple(expected[bad[0]].shape)}")
    encoder.load_state_dict(state)
    return encoder
