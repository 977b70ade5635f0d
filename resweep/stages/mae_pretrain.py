"""The ``mae_pretrain`` stage kind: a masked autoencoder pretrained once per study (MAE loss, §3).

Definition: which MAE (``variant`` vit = CTMAE's transformer, conv = CCMAE's CNN), its size
(a named ``arch`` with optional ``depth``/``width`` overrides), the pretraining recipe (mask
ratio, steps, batch, crop, optimiser, augmentation; by default MAE's own: lr = 1.5e-4 x
batch / 256, AdamW (0.9, 0.95), weight decay 0.05, RandomResizedCrop(0.2-1) + horizontal flip,
see :mod:`resweep.stages.masked_pretraining`) and the images (a ``DatasetSpec`` mapping: the task's
ground-truth training set for CTMAE/CCMAE, out-of-task photographs for a KMAE stand-in).

Artifact files (``out_dir``): ``encoder.pt`` (the encoder's state dict, what the loss uses),
``mae.pt`` (the whole autoencoder, for inspection and the held-out check) and ``mae.json``
(variant, resolved architecture, definition and metrics). :func:`load_encoder` reads them back.

Metrics: ``final_train_loss`` (mean masked-patch loss of the last 10% of steps),
``heldout_masked_loss`` (the masked-patch loss on fixed crops and masks of held-out images) and
``heldout_patch_mean_loss`` (the same loss when every masked patch is predicted by its own
per-channel mean: an oracle of the coarse content; an MAE that learnt structure beats it).

Ray-free; torch is imported inside the functions so that reading definitions stays cheap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator, model_validator

from resweep.config_methods import check_crop_scale
from resweep.stages import StageContext, StageDefinition, register_stage
from resweep.stages.masked_pretraining import (
    MAE_BASE_LR,
    random_resized_crop_box,
    resize_square,
    scaled_lr,
    train_masked_autoencoder,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

ENCODER_FILE = "encoder.pt"
MODEL_FILE = "mae.pt"
INFO_FILE = "mae.json"


class MaePretrainStage(StageDefinition):
    kind: str = "mae_pretrain"
    variant: Literal["vit", "conv"] = "vit"
    arch: Literal["tiny", "small", "base"] = "small"
    depth: int | None = Field(None, ge=1, description="encoder blocks (vit) / stages (conv) override")
    width: int | None = Field(None, ge=4, description="embed dim (vit) / stem channels (conv) override")
    region_size: int | None = Field(None, ge=1, description="conv: side of the masked regions")
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    norm_pix_loss: bool = Field(
        True, description="normalise each target patch (vit) / region (conv) by its mean and std (MAE)"
    )
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    crop: int = Field(96, ge=8, description="side of the training crops (after RandomResizedCrop)")
    lr: float | None = Field(None, gt=0, description="absolute learning rate; None: base_lr x batch_size / 256")
    base_lr: float = Field(MAE_BASE_LR, gt=0, description="MAE's base learning rate (He et al.: 1.5e-4)")
    crop_scale: tuple[float, float] = Field(
        (0.2, 1.0), description="RandomResizedCrop's range of area fractions (MAE: 0.2-1; [1, 1]: plain crops)"
    )
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    data: dict[str, Any] = Field(description="a DatasetSpec mapping: the images to pretrain on")
    held_out_images: int = Field(1, ge=1, description="last N images (sorted) kept for the held-out check")
    heldout_crops_per_image: int = Field(8, ge=1)
    seed: int | Literal["trial"] = Field(0, description="trial: one artifact per trial seed (see StageDefinition)")

    crop_scale_in_range = field_validator("crop_scale")(check_crop_scale)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else scaled_lr(self.base_lr, self.batch_size)

    @model_validator(mode="after")
    def _check(self) -> MaePretrainStage:
        arch = self.resolved_arch()
        if self.variant == "vit":
            if self.crop % arch.patch_size:  # type: ignore[union-attr]
                raise ValueError(f"crop {self.crop} must be a multiple of the patch {arch.patch_size}")  # type: ignore[union-attr]
        else:
            stride = 2**arch.depth  # type: ignore[union-attr]
            if self.crop % stride or self.crop % arch.region_size:  # type: ignore[union-attr]
                raise ValueError(
                    f"crop {self.crop} must be a multiple of 2^depth = {stride} and of the region "
                    f"size {arch.region_size}"  # type: ignore[union-attr]
                )
        return self

    def resolved_arch(self) -> Any:
        """The ``VitMaeArch`` / ``ConvMaeArch`` this definition trains."""
        if self.variant == "vit":
            from resweep.models.mae_vit import VIT_MAE_ARCHS

            base = VIT_MAE_ARCHS[self.arch]
            update: dict[str, Any] = {"img_size": self.crop}
            if self.depth is not None:
                update["depth"] = self.depth
            if self.width is not None:
                if self.width % base.num_heads or self.width % 4:
                    raise ValueError(
                        f"width {self.width} must divide by the {base.num_heads} heads and by 4"
                    )
                update["embed_dim"] = self.width
            return base.model_copy(update=update)
        from resweep.models.mae_conv import CONV_MAE_ARCHS

        base_conv = CONV_MAE_ARCHS[self.arch]
        update = {}
        if self.depth is not None:
            update["depth"] = self.depth
        if self.width is not None:
            update["width"] = self.width
        if self.region_size is not None:
            update["region_size"] = self.region_size
        return base_conv.model_copy(update=update)

    def key_definition(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        # the display name and evaluation-only options do not change the images
        data["data"] = {k: v for k, v in data["data"].items() if k not in ("name", "niqe")}
        return data

    def identity(self) -> dict[str, Any]:
        from resweep.config import DatasetSpec
        from resweep.stages.identity import dataset_identity

        return {"data": dataset_identity(DatasetSpec.model_validate(self.data))}


# --------------------------------------------------------------------------- producing
def build_autoencoder(definition: MaePretrainStage) -> nn.Module:
    from resweep.models.mae_conv import ConvMae
    from resweep.models.mae_vit import VitMae

    arch = definition.resolved_arch()
    if definition.variant == "vit":
        return VitMae(arch, norm_pix_loss=definition.norm_pix_loss)
    return ConvMae(arch, norm_pix_loss=definition.norm_pix_loss)


class _Images:
    """The pretraining images as uint8 tensors (4x less memory than float), split train/held-out."""

    def __init__(self, definition: MaePretrainStage) -> None:
        import torch

        from resweep.config import DatasetSpec
        from resweep.data.sources import build_source

        spec = DatasetSpec.model_validate(definition.data)
        source = build_source(spec)
        n = len(source)
        if n <= definition.held_out_images:
            raise ValueError(
                f"mae_pretrain: {source.name} has {n} image(s); it needs more than "
                f"held_out_images={definition.held_out_images}"
            )
        self.images = []
        for i in range(n):
            img = source.load(i)
            if min(img.shape[-2:]) < definition.crop:
                raise ValueError(
                    f"mae_pretrain: {source.describe(i)} is {img.shape[-2]}x{img.shape[-1]}, "
                    f"smaller than the crop {definition.crop}"
                )
            self.images.append(torch.round(img.clamp(0, 1) * 255).to(torch.uint8))
        self.train = self.images[: n - definition.held_out_images]
        self.held_out = self.images[n - definition.held_out_images :]
        self.name = source.name

    @staticmethod
    def crop(img: torch.Tensor, side: int, generator: torch.Generator,
             scale: tuple[float, float] | None) -> torch.Tensor:
        """A training crop (``scale``: RandomResizedCrop of that area range + horizontal flip)
        or, ``scale`` None, a plain ``side`` crop (the held-out check)."""
        import torch

        h, w = img.shape[-2:]
        if scale is None:
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            return img[:, top : top + side, left : left + side].float() / 255.0
        top, left, ch, cw = random_resized_crop_box(h, w, scale, generator)
        out = resize_square(img[:, top : top + ch, left : left + cw].float() / 255.0, side)
        if torch.rand((), generator=generator) < 0.5:
            out = out.flip(-1)
        return out

    def batch(self, size: int, side: int, generator: torch.Generator, scale: tuple[float, float]) -> torch.Tensor:
        import torch

        picks = torch.randint(0, len(self.train), (size,), generator=generator).tolist()
        return torch.stack([self.crop(self.train[i], side, generator, scale) for i in picks])

    def held_out_batch(self, per_image: int, side: int, seed: int) -> torch.Tensor:
        import torch

        generator = torch.Generator().manual_seed(seed)
        return torch.stack(
            [self.crop(img, side, generator, None) for img in self.held_out for _ in range(per_image)]
        )


def patch_mean_prediction(target: torch.Tensor, cell: int, vit_patches: bool) -> torch.Tensor:
    """Every patch/region predicted by its own mean (over its pixels and channels): the
    held-out reference. With the normalised-pixel target this is 0 (loss ~1); with raw pixels
    it is an oracle of the coarse content.

    ``vit_patches``: ``target`` is ViT patches ``(B, L, p*p*C)``; otherwise an image
    ``(B, C, H, W)`` with regions of ``cell`` pixels (H, W multiples of ``cell``).
    """
    import torch.nn.functional as F

    if vit_patches:
        return target.mean(dim=-1, keepdim=True).expand_as(target)
    means = F.avg_pool2d(target.mean(dim=1, keepdim=True), cell).expand(-1, target.shape[1], -1, -1)
    return means.repeat_interleave(cell, dim=2).repeat_interleave(cell, dim=3)


def held_out_losses(
    model: nn.Module, definition: MaePretrainStage, images: torch.Tensor, seed: int
) -> tuple[float, float]:
    """``(masked loss of the model, masked loss of predicting each patch's mean)`` on ``images``
    with masks drawn from ``seed`` (the same masks for both)."""
    import torch

    from resweep.models.mae_conv import ConvMae

    model.eval()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        loss, _, mask = model(images, mask_ratio=definition.mask_ratio, generator=generator)
        if isinstance(model, ConvMae):
            target = model.target(images)
            reference = patch_mean_prediction(target, model.arch.region_size, False)
            ref_loss = model.masked_loss(reference, target, mask)
        else:
            target = model.target(images)
            reference = patch_mean_prediction(target, model.arch.patch_size, True)
            ref_loss = model.masked_loss(images, reference, mask)
    return float(loss), float(ref_loss)


@register_stage("mae_pretrain", MaePretrainStage)
def produce_mae_pretrain(
    definition: MaePretrainStage, out_dir: Path, context: StageContext
) -> dict[str, float]:
    import torch

    device = context.device or torch.device("cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(definition.seed)
        model = build_autoencoder(definition).to(device)
    images = _Images(definition)
    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    context.log(
        f"mae_pretrain: {definition.variant} MAE ({params / 1e6:.2f}M parameters) on "
        f"{len(images.train)} images of {images.name}, {definition.steps} steps, batch "
        f"{definition.batch_size}, crop {definition.crop} (RandomResizedCrop {list(definition.crop_scale)}), "
        f"lr {definition.effective_lr:.3g}, mask ratio {definition.mask_ratio}"
    )
    started = time.perf_counter()
    final_train_loss = train_masked_autoencoder(
        model, lambda generator: images.batch(definition.batch_size, definition.crop, generator, definition.crop_scale),
        steps=definition.steps, lr=definition.effective_lr, weight_decay=definition.weight_decay,
        warmup_fraction=definition.warmup_fraction, mask_ratio=definition.mask_ratio,
        seed=definition.seed, device=device, log=context.log, stage="mae_pretrain",
    )
    held = images.held_out_batch(definition.heldout_crops_per_image, definition.crop, definition.seed + 3)
    heldout_loss, reference_loss = held_out_losses(model, definition, held.to(device), definition.seed + 4)
    metrics = {
        "final_train_loss": final_train_loss,
        "heldout_masked_loss": heldout_loss,
        "heldout_patch_mean_loss": reference_loss,
        "pretrain_seconds": time.perf_counter() - started,
    }
    context.log(
        f"mae_pretrain: held-out masked loss {heldout_loss:.4f} vs {reference_loss:.4f} when each "
        "masked patch is predicted by its own mean"
    )
    model = model.cpu()
    encoder: Any = model.encoder  # type: ignore[union-attr]
    torch.save(encoder.state_dict(), out_dir / ENCODER_FILE)
    torch.save(model.state_dict(), out_dir / MODEL_FILE)
    info = {
        "variant": definition.variant,
        "arch": definition.resolved_arch().model_dump(),
        "definition": definition.model_dump(mode="json"),
        "train_images": len(images.train),
        "metrics": metrics,
    }
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    return metrics


# --------------------------------------------------------------------------- reading back
def load_encoder(artifact_dir: str | Path) -> nn.Module:
    """The pretrained encoder (``MaeEncoder`` or ``ConvMaeEncoder``) of an artifact folder."""
    import torch

    from resweep.errors import ResweepError
    from resweep.models.mae_conv import ConvMaeArch, ConvMaeEncoder
    from resweep.models.mae_vit import MaeEncoder, VitMaeArch

    folder = Path(artifact_dir)
    info_path, weights_path = folder / INFO_FILE, folder / ENCODER_FILE
    if not info_path.is_file() or not weights_path.is_file():
        raise ResweepError(
            f"{folder} is not an mae_pretrain artifact: it needs {INFO_FILE} and {ENCODER_FILE}"
        )
    info = json.loads(info_path.read_text())
    if info.get("variant") == "vit":
        encoder: nn.Module = MaeEncoder(VitMaeArch.model_validate(info["arch"]))
    elif info.get("variant") == "conv":
        encoder = ConvMaeEncoder(ConvMaeArch.model_validate(info["arch"]))
    else:
        raise ResweepError(f"{info_path}: unknown MAE variant {info.get('variant')!r}")
    encoder.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return encoder


def load_autoencoder(artifact_dir: str | Path) -> nn.Module:
    """The whole pretrained autoencoder (for checks and inspection)."""
    import torch

    folder = Path(artifact_dir)
    info = json.loads((folder / INFO_FILE).read_text())
    definition = MaePretrainStage.model_validate(info["definition"])
    model = build_autoencoder(definition)
    model.load_state_dict(torch.load(folder / MODEL_FILE, map_location="cpu", weights_only=True))
    return model
