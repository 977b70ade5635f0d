"""KMAE: the encoder of an ImageNet-pretrained MAE (ViT-B/16), from a local file only.

Two layouts are read (nothing is ever downloaded):

* the MAE authors' checkpoints (``mae_pretrain_vit_base.pth``: ``{"model": state_dict}``, encoder
  keys named as timm's ViT; a full pretraining checkpoint also holds ``mask_token`` and
  ``decoder_*``, which are ignored);
* timm's ``vit_base_patch16_224.mae`` (a flat state dict, ``model.safetensors`` or
  ``pytorch_model.bin`` as the Hugging Face hub stores it).

Files are looked for the way SPN finds VGG weights: the path given in the config, then
``$RESWEEP_MAE_WEIGHTS``, then the torch hub cache (``checkpoints/mae_pretrain_vit_base.pth``),
then the Hugging Face hub cache of ``timm/vit_base_patch16_224.mae``.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from resweep.errors import ResweepError
from resweep.losses.weights_files import (
    candidate_files,
    find_weights_file,
    load_state_mapping,
    torch_hub_checkpoints,
)
from resweep.models.mae_vit import VIT_MAE_ARCHS, MaeEncoder, VitMaeArch

WEIGHTS_ENV = "RESWEEP_MAE_WEIGHTS"
AUTHORS_FILE = "mae_pretrain_vit_base.pth"
TIMM_HUB_REPO = "models--timm--vit_base_patch16_224.mae"
TIMM_FILES = ("model.safetensors", "pytorch_model.bin")
# keys of the pretraining model that are not the encoder's
_NOT_ENCODER = ("decoder_", "mask_token", "head.", "fc_norm.")


def _hf_hub_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")).expanduser()
    return home / "hub"


def candidate_weight_files(weights: str | Path | None = None) -> list[tuple[str, Path]]:
    """Where the KMAE weights are looked for, in order: ``[(how it was named, path), ...]``."""
    cache: list[tuple[str, Path]] = [("torch hub cache", torch_hub_checkpoints() / AUTHORS_FILE)]
    snapshots = _hf_hub_dir() / TIMM_HUB_REPO / "snapshots"
    hub_files = sorted(snapshots.glob(f"*/{TIMM_FILES[0]}")) + sorted(snapshots.glob(f"*/{TIMM_FILES[1]}"))
    if hub_files:
        cache += [("Hugging Face hub cache", path) for path in hub_files]
    else:
        cache.append(("Hugging Face hub cache", snapshots / "<revision>" / TIMM_FILES[0]))
    return candidate_files(weights, WEIGHTS_ENV, cache)


def resolve_mae_weights(weights: str | Path | None = None) -> Path:
    """The local KMAE weights file, or :class:`WeightsNotFoundError` saying what was tried."""
    return find_weights_file(
        candidate_weight_files(weights),
        explicit=weights is not None,
        explicit_missing=lambda tried: (
            f"MAE encoder weights file not found:\n{tried}\n"
            "Give the path of the MAE authors' mae_pretrain_vit_base.pth or of timm's "
            "vit_base_patch16_224.mae (model.safetensors)."
        ),
        none_found=lambda tried: (
            "no ImageNet MAE (ViT-B/16) weights found for KMAE (nothing is downloaded). Looked for:\n"
            f"{tried}\n"
            f"Provide one of: the path in the config (methods.mae_loss.kmae_weights), the environment "
            f"variable {WEIGHTS_ENV}=/path/to/{AUTHORS_FILE}, the MAE authors' {AUTHORS_FILE} copied "
            f"into {torch_hub_checkpoints()}, or timm's vit_base_patch16_224.mae in "
            "the Hugging Face hub cache. To run anyway with an MAE pretrained here on out-of-task "
            "photographs, which is not the paper's setting, allow it explicitly "
            "(methods.mae_loss.kmae_stand_in: true)."
        ),
    )


def load_mae_encoder_state(path: str | Path) -> dict[str, torch.Tensor]:
    """The encoder's tensors from either layout, keyed as :class:`MaeEncoder` names them."""
    path = Path(path)
    state = load_state_mapping(path, "MAE", ("model", "state_dict"))
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = str(key).removeprefix("module.").removeprefix("encoder.")
        if isinstance(value, torch.Tensor) and not name.startswith(_NOT_ENCODER):
            out[name] = value
    if "pos_embed" not in out or "patch_embed.proj.weight" not in out:
        raise ResweepError(
            f"{path} is not an MAE/ViT encoder: expected keys like 'pos_embed', "
            "'patch_embed.proj.weight', 'blocks.0.attn.qkv.weight' (MAE authors' or timm layout)"
        )
    return out


def load_mae_encoder(path: str | Path, arch: VitMaeArch | None = None) -> MaeEncoder:
    """A frozen-ready :class:`MaeEncoder` (ViT-B/16 unless ``arch``) with the file's weights."""
    arch = arch or VIT_MAE_ARCHS["base"]
    encoder = MaeEncoder(arch)
    state = load_mae_encoder_state(path)
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ResweepError(
            f"{path} does not fit the {arch.embed_dim}-wide, {arch.depth}-block MAE encoder: "
            f"missing {missing[:5]}{'...' if len(missing) > 5 else ''}, "
            f"unexpected {unexpected[:5]}{'...' if len(unexpected) > 5 else ''}"
        )
    bad = [k for k in expected if state[k].shape != expected[k].shape]
    if bad:
        k = bad[0]
        raise ResweepError(
            f"{path}: '{k}' has shape {tuple(state[k].shape)}, expected {tuple(expected[k].shape)} "
            f"(is it a patch-{arch.patch_size} ViT with width {arch.embed_dim}?)"
        )
    encoder.load_state_dict(state)
    return encoder
