"""MAE as a learned loss (METHODS.md §3, issue 12).

    L = ‖y − ŷ‖ + λ · ‖E(y) − E(ŷ)‖

The pixel term is the engine's (``loss.pixel``); this method adds the feature term. ``E`` is a
masked autoencoder's encoder applied to the whole image without masking, frozen: none of its
parameters gets a gradient and ``E(y)`` is computed under ``no_grad``. The feature distance
is the mean absolute (L1) or mean squared (L2) difference, by default the pixel loss's norm.

Loss networks (``variant``):

* ``ctmae``: a ViT MAE pretrained on the task's ground-truth images (stage ``mae_pretrain``,
  variant vit), compared on its final patch tokens after the last norm;
* ``ccmae``: a convolutional MAE pretrained the same way (variant conv), compared on its last
  stage's feature map;
* ``kmae``: the ImageNet MAE ViT-B/16 encoder from a local file
  (:mod:`resweep.models.mae_weights`). With ``kmae_stand_in`` and no file, an MAE pretrained
  here on out-of-task photographs (the scikit-image ones by default) stands in; the results
  record that this is not the paper's setting.

``layers`` compares the outputs of the listed blocks (ViT) / stages (CNN) instead, averaged.
The class token is left out of the comparison: MAE's objective never trains it.

Patch version (``patch: true``, P_CTMAE / P_CCMAE): at every step a random subset of patches
(ViT: ``patch_mask_ratio`` of the tokens dropped, the rest encoded) or a random region mask
(CNN: the same blanked image) is drawn once and used for both ``ŷ`` and ``y``.

Video tasks (``video_denoise``) take the spatiotemporal variants ``ctmae_video`` (the
``mae_video_pretrain`` stage on the task's clean clips) and ``kmae_video`` (MAE-ST's Kinetics
encoder, or a stand-in): see :mod:`resweep.methods.mae_loss_video` for what clip the loss
compares when the network restores only the centre frame. The same ``layers``, ``distance`` and
``patch`` knobs apply (the patch version keeps the same random subset of tubelets for ``ŷ`` and
``y``). A video variant on an image task, or an image one on a video task, is a config error.

The encoder is rebuilt from its artifact or file when a run resumes, so it is kept out of the
method's ``state_dict`` (a ViT-B would add 330 MB to every checkpoint).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from resweep.errors import WeightsNotFoundError
from resweep.methods import Method, MethodConfig, MethodContext, register_method
from resweep.methods.mae_loss_video import (
    VIDEO_VARIANTS,
    MaeVideoPretrainKnobs,
    build_video_encoder,
    check_modality,
    loss_clips,
    stand_in_clips,
    wrap_for_centre_target,
)
from resweep.methods.method_config import PretrainKnobs

if TYPE_CHECKING:
    from resweep.config import DatasetSpec, ExperimentConfig
    from resweep.config_stages import StageDefinition

ENCODER_ROLE = "encoder"
Variant = Literal["ctmae", "ccmae", "kmae", "ctmae_video", "kmae_video"]


class MaePretrainKnobs(PretrainKnobs):
    """The pretraining of CTMAE / CCMAE (and of a KMAE stand-in): becomes a ``mae_pretrain`` stage.
    The defaults are MAE's recipe, which the paper follows (lr = 1.5e-4 x batch / 256, AdamW
    (0.9, 0.95), weight decay 0.05, RandomResizedCrop(0.2-1) + horizontal flip)."""

    arch: Literal["tiny", "small", "base"] = "small"
    depth: int | None = Field(None, ge=1, description="encoder blocks (ViT) / stages (CNN) override")
    width: int | None = Field(None, ge=4, description="embed dim (ViT) / stem channels (CNN) override")
    region_size: int | None = Field(None, ge=1, description="CNN: side of the blanked regions")
    mask_ratio: float = Field(0.75, gt=0, lt=1)
    norm_pix_loss: bool = True
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(16, ge=1)
    crop: int = Field(96, ge=8)
    lr: float | None = Field(
        None, gt=0, description="absolute learning rate; None: MAE's rule base_lr x batch_size / 256"
    )
    base_lr: float = Field(1.5e-4, gt=0, description="MAE's base learning rate (He et al.: 1.5e-4)")
    crop_scale: tuple[float, float] = Field(
        (0.2, 1.0), description="RandomResizedCrop's area fractions (MAE: 0.2-1; [1, 1]: plain crops)"
    )
    seed: int | Literal["trial"] = Field(
        0, description="pretraining seed; trial: one encoder per trial seed, each made once"
    )
    held_out_images: int = Field(1, ge=1)

    @field_validator("crop_scale")
    @classmethod
    def _check_crop_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        from resweep.config_methods import check_crop_scale

        return check_crop_scale(value)


class MaeLossConfig(MethodConfig):
    """Knobs of the MAE feature loss (``methods.mae_loss.*``)."""

    weight: float = Field(1.0, ge=0, description="λ (paper: 1)")
    variant: Variant = "ctmae"
    distance: Literal["same_as_pixel", "l1", "l2"] = Field(
        "same_as_pixel", description="feature distance; default: the norm of loss.pixel"
    )
    layers: list[int] | None = Field(
        None, description="block (ViT) / stage (CNN) indices to compare, averaged; "
        "None: the final tokens after the last norm (ViT) / the last stage (CNN)"
    )
    patch: bool = Field(False, description="patch version (P_CTMAE / P_CCMAE)")
    patch_mask_ratio: float = Field(0.75, gt=0, lt=1, description="patch version: fraction hidden")
    pretrain: MaePretrainKnobs = Field(default_factory=MaePretrainKnobs)
    kmae_weights: Path | None = Field(
        None, description="ImageNet MAE ViT-B/16 file (default: $RESWEEP_MAE_WEIGHTS, hub caches)"
    )
    kmae_stand_in: bool = Field(
        False, description="KMAE / KMAE-video without a weights file: pretrain a stand-in on "
        "out-of-task photos / other clips"
    )
    pretrain_video: MaeVideoPretrainKnobs = Field(default_factory=MaeVideoPretrainKnobs)
    kmae_video_weights: Path | None = Field(
        None, description="MAE-ST (Kinetics) checkpoint (default: $RESWEEP_MAE_VIDEO_WEIGHTS, torch hub cache)"
    )

    @property
    def is_video(self) -> bool:
        return self.variant in VIDEO_VARIANTS

    def check_experiment(self, experiment: ExperimentConfig) -> None:
        check_modality(self.variant, experiment)

    def stages(self, experiment: ExperimentConfig) -> dict[str, StageDefinition]:
        """``{"encoder": mae_pretrain / mae_video_pretrain definition}`` for CTMAE/CCMAE/
        CTMAE-video and a KMAE(-video) stand-in."""
        if not self.enabled or self.weight == 0:
            return {}
        if self.variant in ("kmae", "kmae_video") and not self._needs_stand_in():
            return {}
        if self.is_video:
            from resweep.methods.mae_loss_video import pretrain_stage

            knobs = self.pretrain_video
            data = knobs.dataset(stand_in_clips() if self.variant == "kmae_video" else experiment.data.train)
            return {ENCODER_ROLE: pretrain_stage(knobs, data, experiment)}
        return {ENCODER_ROLE: self.pretrain_stage(experiment)}

    def _needs_stand_in(self) -> bool:
        from resweep.models.mae_video_weights import resolve_video_mae_weights
        from resweep.models.mae_weights import resolve_mae_weights

        explicit = self.kmae_video_weights if self.is_video else self.kmae_weights
        if not self.kmae_stand_in or explicit is not None:
            return False
        try:
            (resolve_video_mae_weights if self.is_video else resolve_mae_weights)(None)
        except WeightsNotFoundError:
            return True
        return False

    def pretrain_stage(self, experiment: ExperimentConfig) -> StageDefinition:
        from resweep.stages.mae_pretrain import MaePretrainStage

        knobs = self.pretrain
        data = knobs.dataset(stand_in_photos() if self.variant == "kmae" else experiment.data.train)
        return MaePretrainStage(
            variant="conv" if self.variant == "ccmae" else "vit",
            arch=knobs.arch, depth=knobs.depth, width=knobs.width, region_size=knobs.region_size,
            mask_ratio=knobs.mask_ratio, norm_pix_loss=knobs.norm_pix_loss, steps=knobs.steps,
            batch_size=knobs.batch_size, crop=knobs.crop, lr=knobs.lr, base_lr=knobs.base_lr,
            crop_scale=knobs.crop_scale, seed=knobs.seed,
            data=data.model_dump(mode="json"), held_out_images=knobs.held_out_images,
        )


def stand_in_photos() -> DatasetSpec:
    """The KMAE stand-in's default images: scikit-image's photographs (out of task for CBSD432)."""
    from resweep.config import DatasetSpec

    return DatasetSpec(kind="demo", split="all")


def derive_seed(seed: int, *tags: object) -> int:
    text = ":".join(str(t) for t in (seed, *tags))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


def feature_distance(kind: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if kind == "l1":
        return lambda a, b: (a - b).abs().mean()
    return lambda a, b: ((a - b) ** 2).mean()


@register_method
class MaeLoss(Method):
    """Adds ``λ·‖E(y) − E(ŷ)‖`` with a frozen MAE encoder ``E``."""

    name: ClassVar[str] = "mae_loss"
    config_class: ClassVar[type[MethodConfig]] = MaeLossConfig

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__(config, context)
        assert isinstance(config, MaeLossConfig)
        self.cfg = config
        self._seed = context.config.train.seed
        self._rank = context.world.rank
        self._video = context.config.task.video  # window length and target of a video task
        self._notes: list[str] = []
        self._dist_sum: torch.Tensor | None = None
        self._dist_count = 0
        pixel = context.config.loss.pixel
        if config.distance == "same_as_pixel":
            self.distance_kind = "l2" if pixel == "l2" else "l1"
            if pixel == "charbonnier":
                self._notes.append("mae_loss: pixel loss is Charbonnier; the feature distance is L1")
        else:
            self.distance_kind = config.distance
        self._distance = feature_distance(self.distance_kind)
        self.active = config.enabled and config.weight > 0
        # not a registered submodule: kept out of state_dict (see the module docstring)
        self._encoder: nn.Module | None = None
        if not self.active:
            return
        encoder = self._build_encoder(context)
        encoder.requires_grad_(False)
        encoder.eval()
        object.__setattr__(self, "_encoder", encoder)  # bypass submodule registration
        from resweep.models.mae_conv import ConvMaeEncoder
        from resweep.models.mae_video import VideoMaeEncoder
        from resweep.models.mae_vit import MaeEncoder

        if isinstance(encoder, MaeEncoder | VideoMaeEncoder) and config.layers is not None:
            _check_indices(config.layers, len(encoder.blocks), "block")
        if isinstance(encoder, ConvMaeEncoder) and config.layers is not None:
            _check_indices(config.layers, len(encoder.stages), "stage")
        for note in self._notes:
            context.log(note)

    def _build_encoder(self, context: MethodContext) -> nn.Module:
        from resweep.models.mae_conv import ConvMaeEncoder
        from resweep.models.mae_vit import MaeEncoder
        from resweep.stages.mae_pretrain import load_encoder

        cfg = self.cfg
        if cfg.is_video:
            return build_video_encoder(cfg, context, self._notes, ENCODER_ROLE)
        if cfg.variant in ("ctmae", "ccmae"):
            encoder = load_encoder(context.artifact_dir(ENCODER_ROLE))
            want = MaeEncoder if cfg.variant == "ctmae" else ConvMaeEncoder
            if not isinstance(encoder, want):
                raise TypeError(
                    f"methods.mae_loss.variant '{cfg.variant}' needs a "
                    f"{'ViT' if want is MaeEncoder else 'CNN'} MAE, the artifact holds a {type(encoder).__name__}"
                )
            return encoder
        from resweep.models.mae_weights import load_mae_encoder, resolve_mae_weights

        try:
            path = resolve_mae_weights(cfg.kmae_weights)
        except WeightsNotFoundError:
            if not cfg.kmae_stand_in or cfg.kmae_weights is not None or ENCODER_ROLE not in context.artifacts:
                raise
            self._notes.append(
                "mae_loss: KMAE STAND-IN: no ImageNet MAE weights file was found; the encoder is an "
                "MAE pretrained here on out-of-task photographs "
                f"({cfg.pretrain.dataset(stand_in_photos()).display_name}), "
                "not the paper's ImageNet ViT-B/16"
            )
            return load_encoder(context.artifact_dir(ENCODER_ROLE))
        self._notes.append(f"mae_loss: KMAE encoder from {path}")
        return load_mae_encoder(path)

    @property
    def encoder(self) -> nn.Module:
        if self._encoder is None:
            raise RuntimeError("mae_loss is inactive (weight 0 or disabled): it has no encoder")
        return self._encoder

    def _apply(self, fn: Any, recurse: bool = True) -> MaeLoss:  # type: ignore[override]
        # .to(device) / .half() reach the unregistered encoder too
        super()._apply(fn, recurse)
        if self._encoder is not None:
            self._encoder._apply(fn)
        return self

    def train(self, mode: bool = True) -> MaeLoss:
        super().train(mode)
        if self._encoder is not None:
            self._encoder.eval()  # frozen: always in eval mode
        return self

    # ------------------------------------------------------------------ loss
    def wrap_train_dataset(self, dataset: Any) -> Any:
        if self.active and self.cfg.is_video:
            return wrap_for_centre_target(dataset, self._video.target)
        return dataset

    def draw_visible(self, images: torch.Tensor, iteration: int) -> torch.Tensor | None:
        """Patch version: the shared selection for ŷ and y (ViT ``ids_keep`` of patches or of
        tubelets for a clip ``(B, T, 3, H, W)`` / CNN region mask)."""
        if not self.cfg.patch:
            return None
        from resweep.models.mae_conv import ConvMaeEncoder, region_mask
        from resweep.models.mae_video import VideoMaeEncoder
        from resweep.models.mae_vit import MaeEncoder, random_keep_ids

        b, h, w = images.shape[0], images.shape[-2], images.shape[-1]
        generator = torch.Generator().manual_seed(derive_seed(self._seed, "mae-loss-patch", iteration, self._rank))
        encoder = self.encoder
        if isinstance(encoder, VideoMaeEncoder):
            gt, gh, gw = encoder.grid_of(images.shape[1], h, w)
            ids_keep, _ = random_keep_ids(b, gt * gh * gw, self.cfg.patch_mask_ratio, generator)
            return ids_keep.to(images.device)
        if isinstance(encoder, MaeEncoder):
            ids_keep, _ = random_keep_ids(b, encoder.num_patches(h, w), self.cfg.patch_mask_ratio, generator)
            return ids_keep.to(images.device)
        assert isinstance(encoder, ConvMaeEncoder)
        return region_mask(
            b, h, w, encoder.arch.region_size, self.cfg.patch_mask_ratio, generator, images.device
        )

    def encode(self, images: torch.Tensor, visible: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The compared encoder outputs of ``images`` (patch tokens without the class token);
        for a video encoder ``images`` is a clip ``(B, T, 3, H, W)`` (tubelet tokens, the class
        token left out when the encoder has one)."""
        from resweep.models.mae_conv import ConvMaeEncoder
        from resweep.models.mae_video import VideoMaeEncoder
        from resweep.models.mae_vit import MaeEncoder

        encoder = self.encoder
        if isinstance(encoder, VideoMaeEncoder):
            outs = encoder.forward_tokens(images, ids_keep=visible, blocks=self.cfg.layers)
            return [o[:, encoder.num_prefix_tokens :] for o in outs]
        if isinstance(encoder, MaeEncoder):
            outs = encoder.forward_tokens(images, ids_keep=visible, blocks=self.cfg.layers)
            return [o[:, 1:] for o in outs]
        assert isinstance(encoder, ConvMaeEncoder)
        return encoder.forward_features(images, stages=self.cfg.layers, mask=visible)

    def feature_loss(
        self, prediction: torch.Tensor, target: torch.Tensor, iteration: int = 0
    ) -> torch.Tensor:
        """Unweighted ``‖E(y) − E(ŷ)‖``, averaged over the compared layers."""
        visible = self.draw_visible(target, iteration)
        with torch.no_grad():
            target_feats = self.encode(target, visible)
        pred_feats = self.encode(prediction, visible)
        total = prediction.new_zeros((), dtype=torch.float32)
        for p, t in zip(pred_feats, target_feats, strict=True):
            total = total + self._distance(p.float(), t.float())
        return total / len(pred_feats)

    def loss_terms(
        self, prediction: torch.Tensor, batch: dict[str, torch.Tensor], iteration: int
    ) -> dict[str, torch.Tensor]:
        if not self.active:
            return {}
        if self.cfg.is_video:
            prediction, target = loss_clips(prediction, batch, self._video.num_frames, self._video.target)
        else:
            target = batch["gt"]
        distance = self.feature_loss(prediction, target, iteration)
        d = distance.detach()
        self._dist_sum = d if self._dist_sum is None else self._dist_sum + d
        self._dist_count += 1
        return {"mae": self.cfg.weight * distance}

    # ------------------------------------------------------------------ reporting
    def metrics(self, iteration: int) -> dict[str, float]:
        """Mean unweighted feature distance since the last report (this rank's)."""
        if self._dist_sum is None or not self._dist_count:
            return {}
        value = float(self._dist_sum) / self._dist_count
        self._dist_sum, self._dist_count = None, 0
        return {"feature_distance": value}

    def notes(self) -> list[str]:
        return list(self._notes)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"variant={c.variant}, weight={c.weight:g}, distance={self.distance_kind}, "
            f"layers={c.layers}, patch={c.patch}"
        )


def _check_indices(indices: list[int], count: int, what: str) -> None:
    bad = [i for i in indices if not -count <= i < count]
    if bad:
        raise ValueError(
            f"methods.mae_loss.layers: {what} indices {bad} out of range; the encoder has {count} {what}s"
        )
