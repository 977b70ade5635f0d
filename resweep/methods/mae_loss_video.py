"""The video side of the MAE loss (``mae_loss`` variants ``ctmae_video`` / ``kmae_video``).

For a video task (``video_denoise``) ``E`` is a spatiotemporal MAE encoder
(:class:`~resweep.models.mae_video.VideoMaeEncoder`) and the loss compares
``E(window of restored frames)`` with ``E(window of clean frames)``. What the window holds
depends on what the network restores (``task.video.target``):

* ``all``: the network outputs every frame of its window: the clip compared is that output,
  frame for frame against the clean window (``(B, 3T, H, W)`` read as ``(B, T, 3, H, W)``).
* ``centre`` (FastDVDnet's own output, the paper's setting): the network outputs one frame.
  The encoder needs a clip, so the restored centre frame is put back *in its place among the
  clean neighbouring frames* of its window and that clip is compared with the clean window.
  The neighbours are identical on both sides, so the distance measures only how the restored
  frame fits its true spatiotemporal context, and the gradient reaches the network through
  the centre frame only. (Repeating the centre frame ``t`` times instead would show the
  encoder a static clip, which it never saw in pretraining.) The training samples then carry
  the clean window too (``data.video.CLEAN_WINDOW_KEY``).

Loss networks:

* ``ctmae_video``: the ``mae_video_pretrain`` stage on the task's clean training clips (the
  knobs of ``pretrain_video``), made once per study;
* ``kmae_video``: MAE-ST's Kinetics-pretrained encoder from a local file
  (:mod:`resweep.models.mae_video_weights`); with ``kmae_stand_in`` and no file, a video MAE
  pretrained here on other clips (the scikit-image demo clips by default) stands in, and the
  run's log and the method's notes() say that this is not the paper's setting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field, field_validator

from resweep.errors import ConfigError, ResweepError, WeightsNotFoundError
from resweep.methods.method_config import PretrainKnobs

if TYPE_CHECKING:
    from torch import nn

    from resweep.config import DatasetSpec, ExperimentConfig
    from resweep.methods import MethodContext
    from resweep.stages.mae_video_pretrain import MaeVideoPretrainStage

VIDEO_VARIANTS = ("ctmae_video", "kmae_video")


class MaeVideoPretrainKnobs(PretrainKnobs):
    """The pretraining of CTMAE-video (and of a KMAE-video stand-in): a ``mae_video_pretrain`` stage.
    The defaults are MAE-ST's recipe (lr = 1.6e-3 x batch / 256, AdamW (0.9, 0.95), weight decay
    0.05, RandomResizedCrop(0.5-1) on every frame alike + horizontal flip)."""

    arch: Literal["tiny", "small"] = "small"
    mask_ratio: float = Field(0.9, gt=0, lt=1, description="fraction of tubelets hidden (MAE-ST: 0.9)")
    norm_pix_loss: bool = True
    num_frames: int | None = Field(None, ge=1, description="frames per window; default: the task's window")
    crop: int = Field(64, ge=8)
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float | None = Field(
        None, gt=0, description="absolute learning rate; None: MAE-ST's rule base_lr x batch_size / 256"
    )
    base_lr: float = Field(1.6e-3, gt=0, description="MAE-ST's base learning rate (1.6e-3)")
    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="RandomResizedCrop's area fractions (MAE-ST: 0.5-1; [1, 1]: plain crops)"
    )
    seed: int | Literal["trial"] = Field(
        0, description="pretraining seed; trial: one encoder per trial seed, each made once"
    )
    held_out_clips: int = Field(0, ge=0, description="last N clips kept for the held-out check")
    held_out_frames: int = Field(
        8, ge=0, description="last N frames of every clip kept for the held-out check (works with "
        "a single training clip)"
    )

    @field_validator("crop_scale")
    @classmethod
    def _check_crop_scale(cls, value: tuple[float, float]) -> tuple[float, float]:
        from resweep.config_methods import check_crop_scale

        return check_crop_scale(value)



def stand_in_clips() -> DatasetSpec:
    """The KMAE-video stand-in's default clips: pans over scikit-image photographs, other
    clips than any task's folder of real video."""
    from resweep.config import DatasetSpec

    return DatasetSpec(kind="video_demo", split="all")


def is_video_task(experiment: ExperimentConfig) -> bool:
    from resweep.degradations.tasks import TASKS

    return bool(TASKS.get(experiment.task.kind).is_video)


def check_modality(variant: str, experiment: ExperimentConfig) -> None:
    """A video loss network on an image task, or an image one on a video task, is refused."""
    video_variant = variant in VIDEO_VARIANTS
    video_task = is_video_task(experiment)
    if video_variant and not video_task:
        raise ValueError(
            f"variant '{variant}' is a spatiotemporal (video) MAE but task.kind "
            f"'{experiment.task.kind}' restores single images; use ctmae, ccmae or kmae"
        )
    if video_task and not video_variant:
        raise ValueError(
            f"variant '{variant}' is an image MAE but task.kind '{experiment.task.kind}' restores "
            f"video: use {' or '.join(VIDEO_VARIANTS)}"
        )


def pretrain_stage(knobs: MaeVideoPretrainKnobs, data: DatasetSpec, experiment: ExperimentConfig) -> MaeVideoPretrainStage:
    from resweep.stages.mae_video_pretrain import MaeVideoPretrainStage

    return MaeVideoPretrainStage(
        arch=knobs.arch, mask_ratio=knobs.mask_ratio, norm_pix_loss=knobs.norm_pix_loss,
        num_frames=knobs.num_frames or experiment.task.video.num_frames, crop=knobs.crop,
        steps=knobs.steps, batch_size=knobs.batch_size, lr=knobs.lr, base_lr=knobs.base_lr,
        crop_scale=knobs.crop_scale, seed=knobs.seed,
        data=data.model_dump(mode="json"), held_out_clips=knobs.held_out_clips,
        held_out_frames=knobs.held_out_frames,
    )


def build_video_encoder(cfg: Any, context: MethodContext, notes: list[str], role: str) -> nn.Module:
    """The frozen-to-be encoder of a video variant (``cfg``: the ``MaeLossConfig``)."""
    from resweep.models.mae_video import VideoMaeEncoder
    from resweep.models.mae_video_weights import load_video_mae_encoder, resolve_video_mae_weights
    from resweep.stages.mae_video_pretrain import load_video_encoder

    if cfg.variant == "ctmae_video":
        encoder = load_video_encoder(context.artifact_dir(role))
    else:
        try:
            path = resolve_video_mae_weights(cfg.kmae_video_weights)
        except WeightsNotFoundError:
            if not cfg.kmae_stand_in or cfg.kmae_video_weights is not None or role not in context.artifacts:
                raise
            notes.append(
                "mae_loss: KMAE-VIDEO STAND-IN: no MAE-ST (Kinetics) weights file was found; the "
                "encoder is a video MAE pretrained here on other clips "
                f"({cfg.pretrain_video.dataset(stand_in_clips()).display_name}), not the paper's "
                "Kinetics-pretrained MAE-ST"
            )
            encoder = load_video_encoder(context.artifact_dir(role))
        else:
            notes.append(f"mae_loss: KMAE-video encoder from {path}")
            encoder = load_video_mae_encoder(path)
    if not isinstance(encoder, VideoMaeEncoder):
        raise TypeError(f"variant '{cfg.variant}' needs a video MAE encoder, got {type(encoder).__name__}")
    return encoder


def wrap_for_centre_target(dataset: Any, target: str) -> Any:
    """With a centre-frame target the loss needs each sample's clean window too."""
    if target != "centre":
        return dataset
    from resweep.data.video import VideoWindowDataset

    if not isinstance(dataset, VideoWindowDataset):
        raise ResweepError(
            "mae_loss (video): the centre-frame loss needs the engine's VideoWindowDataset (to "
            f"add each window's clean frames), got {type(dataset).__name__}"
        )
    return dataset.with_clean_window()


def loss_clips(
    prediction: torch.Tensor, batch: dict[str, torch.Tensor], num_frames: int, target: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(restored clip, clean clip)``, both ``(B, T, 3, H, W)`` (see the module docstring)."""
    from resweep.data.video import CLEAN_WINDOW_KEY
    from resweep.models.mae_video import frames_of

    if target == "all":
        return frames_of(prediction, num_frames), frames_of(batch["gt"], num_frames)
    if CLEAN_WINDOW_KEY not in batch:
        raise ConfigError(
            "mae_loss (video, centre-frame target): the batch has no clean window "
            f"('{CLEAN_WINDOW_KEY}'); was the method's wrap_train_dataset bypassed?",
            field="methods.mae_loss.variant",
        )
    clean = batch[CLEAN_WINDOW_KEY]
    centre = clean.shape[1] // 2
    restored = torch.cat(
        [clean[:, :centre], prediction.unsqueeze(1).to(clean.dtype), clean[:, centre + 1 :]], dim=1
    )
    return restored, clean
