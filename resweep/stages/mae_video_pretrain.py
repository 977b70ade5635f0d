"""The ``mae_video_pretrain`` stage kind: a spatiotemporal MAE pretrained once per study.

CTMAE-video pretrains on the task's clean training clips; a KMAE-video stand-in (no video MAE
weights file offline) pretrains the same way on other clips (e.g. the demo clips), and the
run must record it as a stand-in.

Definition: the size (``arch`` of :data:`~resweep.models.mae_video.VIDEO_MAE_ARCHS`), the
recipe (mask ratio 0.9 as MAE-ST, steps, batch, crop side, clip length, optimiser,
augmentation; by default MAE-ST's: lr = 1.6e-3 x batch / 256, AdamW (0.9, 0.95), weight decay
0.05, RandomResizedCrop(0.5-1) alike on every frame + horizontal flip, see
:mod:`resweep.stages.masked_pretraining`) and the
clips (a video ``DatasetSpec`` mapping). The last ``held_out_clips`` clips, and the last
``held_out_frames`` frames of every other clip, are kept out of training for the held-out check
(a tail of frames lets a task with a single training clip, as the shared bikes/carphone split
has, still check its MAE on frames it never saw).

Artifact files: ``encoder.pt`` (the encoder's state dict: what a loss uses), ``mae.pt`` (the
whole autoencoder) and ``mae_video.json`` (architecture, definition, metrics);
:func:`load_video_encoder` reads them back.

Metrics: ``final_train_loss`` (mean masked loss over the last 10% of steps),
``heldout_masked_loss`` (masked-tubelet loss on fixed windows and masks of the held-out clips)
and ``heldout_tubelet_mean_loss`` (the same when each hidden tubelet is predicted by its own
mean: with the normalised target that is ~1; an MAE that learnt structure is below it).

Ray-free; torch is imported inside the functions so reading definitions stays cheap.
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
    MAE_ST_BASE_LR,
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
INFO_FILE = "mae_video.json"


class MaeVideoPretrainStage(StageDefinition):
    kind: str = "mae_video_pretrain"
    arch: Literal["tiny", "small"] = "small"
    mask_ratio: float = Field(0.9, gt=0, lt=1, description="fraction of tubelets hidden (MAE-ST: 0.9)")
    norm_pix_loss: bool = True
    num_frames: int = Field(4, ge=1, description="frames per pretraining clip window")
    crop: int = Field(64, ge=8, description="side of the training crops (same on every frame)")
    steps: int = Field(2000, ge=1)
    batch_size: int = Field(8, ge=1)
    lr: float | None = Field(None, gt=0, description="absolute learning rate; None: base_lr x batch_size / 256")
    base_lr: float = Field(MAE_ST_BASE_LR, gt=0, description="MAE-ST's base learning rate (1.6e-3)")
    crop_scale: tuple[float, float] = Field(
        (0.5, 1.0), description="RandomResizedCrop's range of area fractions (MAE-ST: 0.5-1; [1, 1]: plain crops)"
    )
    weight_decay: float = Field(0.05, ge=0)
    warmup_fraction: float = Field(0.05, ge=0, lt=1)
    data: dict[str, Any] = Field(description="a video DatasetSpec mapping: the clips to pretrain on")
    held_out_clips: int = Field(1, ge=0, description="last N clips (sorted) kept for the held-out check")
    held_out_frames: int = Field(
        0, ge=0, description="last N frames of every training clip kept for the held-out check"
    )
    heldout_windows_per_clip: int = Field(8, ge=1)
    seed: int | Literal["trial"] = Field(0, description="trial: one artifact per trial seed (see StageDefinition)")

    crop_scale_in_range = field_validator("crop_scale")(check_crop_scale)

    @property
    def effective_lr(self) -> float:
        return self.lr if self.lr is not None else scaled_lr(self.base_lr, self.batch_size)

    @model_validator(mode="after")
    def _check_held_out(self) -> MaeVideoPretrainStage:
        if self.held_out_clips == 0 and self.held_out_frames < self.num_frames:
            raise ValueError(
                f"the held-out check needs held_out_clips >= 1 or held_out_frames >= num_frames "
                f"({self.num_frames}), got held_out_clips=0, held_out_frames={self.held_out_frames}"
            )
        if 0 < self.held_out_frames < self.num_frames:
            raise ValueError(f"held_out_frames {self.held_out_frames} is shorter than a window of "
                             f"num_frames={self.num_frames}")
        return self

    def key_definition(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        data["data"] = {k: v for k, v in data["data"].items() if k != "name"}
        return data

    def identity(self) -> dict[str, Any]:
        return {"data": video_dataset_identity(self.data)}


def video_dataset_identity(data: dict[str, Any]) -> dict[str, Any]:
    """Which frames a video spec stands for (every clip's frame files, or the scikit-image
    version for demo clips): the one dataset identity of the stages layer."""
    from resweep.config import DatasetSpec
    from resweep.stages.identity import dataset_identity

    return dataset_identity(DatasetSpec.model_validate(data))


class _Clips:
    """The pretraining clips as ``(clip, first frame, end frame)`` ranges, for training and
    for the held-out check."""

    def __init__(self, definition: MaeVideoPretrainStage) -> None:
        from resweep.config import DatasetSpec
        from resweep.data.video import build_video_source

        source = build_video_source(DatasetSpec.model_validate(definition.data), field="data")
        n, held, tail = len(source), definition.held_out_clips, definition.held_out_frames
        if n <= held:
            raise ValueError(
                f"mae_video_pretrain: {source.name} has {n} clip(s); it needs more than "
                f"held_out_clips={held}"
            )
        for clip in source.clips[: n - held]:
            if len(clip) - tail < definition.num_frames:
                raise ValueError(
                    f"mae_video_pretrain: {clip.describe()} has {len(clip)} frames: too few for a "
                    f"training window of {definition.num_frames} frames before its last "
                    f"held_out_frames={tail}"
                )
        for clip in source.clips:
            h, w = clip.frame_hw
            if len(clip) < definition.num_frames or min(h, w) < definition.crop:
                raise ValueError(
                    f"mae_video_pretrain: {clip.describe()} ({len(clip)} frames of {h}x{w}) is "
                    f"smaller than a window of {definition.num_frames} frames of "
                    f"{definition.crop}x{definition.crop}"
                )
        source.set_cache()
        self.name = source.name
        kept = source.clips[: n - held]
        self.train = [(clip, 0, len(clip) - tail) for clip in kept]
        self.held_out = [(clip, 0, len(clip)) for clip in source.clips[n - held :]]
        if tail:
            self.held_out += [(clip, len(clip) - tail, len(clip)) for clip in kept]

    @staticmethod
    def window(span: tuple[Any, int, int], frames: int, side: int, generator: torch.Generator,
               scale: tuple[float, float] | None) -> torch.Tensor:
        """A training window (``scale``: one RandomResizedCrop of that area range for all its
        frames + horizontal flip) or, ``scale`` None, a plain ``side`` crop (held-out check)."""
        import torch

        clip, first, end = span
        start = first + int(torch.randint(0, end - first - frames + 1, (1,), generator=generator))
        h, w = clip.frame_hw
        indices = list(range(start, start + frames))
        if scale is None:
            top = int(torch.randint(0, h - side + 1, (1,), generator=generator))
            left = int(torch.randint(0, w - side + 1, (1,), generator=generator))
            return clip.load_crop(indices, top, left, side, side)
        top, left, ch, cw = random_resized_crop_box(h, w, scale, generator)
        out = resize_square(clip.load_crop(indices, top, left, ch, cw), side)
        if torch.rand((), generator=generator) < 0.5:
            out = out.flip(-1)
        return out

    def batch(self, d: MaeVideoPretrainStage, generator: torch.Generator) -> torch.Tensor:
        import torch

        picks = torch.randint(0, len(self.train), (d.batch_size,), generator=generator).tolist()
        return torch.stack([
            self.window(self.train[i], d.num_frames, d.crop, generator, d.crop_scale) for i in picks
        ])

    def held_out_batch(self, d: MaeVideoPretrainStage, seed: int) -> torch.Tensor:
        import torch

        generator = torch.Generator().manual_seed(seed)
        return torch.stack([
            self.window(span, d.num_frames, d.crop, generator, None)
            for span in self.held_out for _ in range(d.heldout_windows_per_clip)
        ])


def held_out_losses(model: nn.Module, mask_ratio: float, clips: torch.Tensor, seed: int) -> tuple[float, float]:
    """``(masked loss of the model, masked loss of predicting each hidden tubelet by its own
    mean)`` with the same masks (drawn from ``seed``)."""
    import torch

    model.eval()
    with torch.no_grad():
        loss, _, mask = model(clips, mask_ratio=mask_ratio, generator=torch.Generator().manual_seed(seed))
        target = model.target(clips)
        reference = target.mean(dim=-1, keepdim=True).expand_as(target)
        ref_loss = model.masked_loss(clips, reference, mask)
    return float(loss), float(ref_loss)


@register_stage("mae_video_pretrain", MaeVideoPretrainStage)
def produce_mae_video_pretrain(
    definition: MaeVideoPretrainStage, out_dir: Path, context: StageContext
) -> dict[str, float]:
    import torch

    from resweep.models.mae_video import VIDEO_MAE_ARCHS, VideoMae

    device = context.device or torch.device("cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    arch = VIDEO_MAE_ARCHS[definition.arch]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(definition.seed)
        model = VideoMae(arch, norm_pix_loss=definition.norm_pix_loss).to(device)
    clips = _Clips(definition)
    params = sum(p.numel() for p in model.parameters())
    context.log(
        f"mae_video_pretrain: video MAE ({params / 1e6:.2f}M parameters) on {len(clips.train)} "
        f"clip(s) of {clips.name}, {definition.steps} steps, batch {definition.batch_size} x "
        f"{definition.num_frames} frames of {definition.crop}px (RandomResizedCrop "
        f"{list(definition.crop_scale)}), lr {definition.effective_lr:.3g}, mask ratio {definition.mask_ratio}"
    )
    started = time.perf_counter()
    final_train_loss = train_masked_autoencoder(
        model, lambda generator: clips.batch(definition, generator),
        steps=definition.steps, lr=definition.effective_lr, weight_decay=definition.weight_decay,
        warmup_fraction=definition.warmup_fraction, mask_ratio=definition.mask_ratio,
        seed=definition.seed, device=device, log=context.log, stage="mae_video_pretrain",
    )
    held = clips.held_out_batch(definition, definition.seed + 3).to(device)
    heldout, reference = held_out_losses(model, definition.mask_ratio, held, definition.seed + 4)
    metrics = {
        "final_train_loss": final_train_loss,
        "heldout_masked_loss": heldout,
        "heldout_tubelet_mean_loss": reference,
        "pretrain_seconds": time.perf_counter() - started,
    }
    context.log(f"mae_video_pretrain: held-out masked loss {heldout:.4f} vs {reference:.4f} when "
                "each hidden tubelet is predicted by its own mean")
    model = model.cpu()
    torch.save(model.encoder.state_dict(), out_dir / ENCODER_FILE)
    torch.save(model.state_dict(), out_dir / MODEL_FILE)
    info = {
        "arch": arch.model_dump(),
        "definition": definition.model_dump(mode="json"),
        "train_clips": [f"{c.name}[{a}:{b}]" for c, a, b in clips.train],
        "held_out_clips": [f"{c.name}[{a}:{b}]" for c, a, b in clips.held_out],
        "metrics": metrics,
    }
    (out_dir / INFO_FILE).write_text(json.dumps(info, indent=2))
    return metrics


def load_video_encoder(artifact_dir: str | Path) -> nn.Module:
    """The pretrained :class:`~resweep.models.mae_video.VideoMaeEncoder` of an artifact folder
    (``weights_only`` loading)."""
    import torch

    from resweep.errors import ResweepError
    from resweep.models.mae_video import VideoMaeArch, VideoMaeEncoder

    folder = Path(artifact_dir)
    info_path, weights_path = folder / INFO_FILE, folder / ENCODER_FILE
    if not info_path.is_file() or not weights_path.is_file():
        raise ResweepError(
            f"{folder} is not a mae_video_pretrain artifact: it needs {INFO_FILE} and {ENCODER_FILE}"
        )
    info = json.loads(info_path.read_text())
    encoder = VideoMaeEncoder(VideoMaeArch.model_validate(info["arch"]))
    encoder.load_state_dict(torch.load(weights_path, map_location="cpu", weights_only=True))
    return encoder
