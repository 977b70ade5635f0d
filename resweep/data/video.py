"""Video training windows and evaluation clips for the ``video_denoise`` task.

Training samples are random temporal windows of T consecutive frames with one random crop
(and one random flip/transpose) shared by every frame, addressed like the image patches by
``(window_index, sample_seed)`` keys, so a sample depends on its key only. Windows are
indexed over all clips (every start frame of every clip once per epoch), so a long clip is
seen in proportion to its length.

Evaluation keeps each clip whole (or its first ``max_frames``), degraded once with a generator
seeded by ``(eval seed, clip index)``; :mod:`resweep.engine.evaluate_clips` slides the
window over it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from resweep.data.crops import augment_aligned, centre_crop, eval_seed, random_crop_params
from resweep.data.video_clips import VideoSource, discover_clips
from resweep.data.video_demo import demo_video_source
from resweep.degradations.video_denoise import VideoDenoise, pack_window
from resweep.errors import ConfigError, DataError

if TYPE_CHECKING:
    from resweep.config import DatasetSpec, ExperimentConfig

__all__ = [
    "CLEAN_WINDOW_KEY",
    "VIDEO_DATASET_KINDS",
    "ClipEvalSet",
    "EvalClip",
    "VideoWindowDataset",
    "build_clip_eval_set",
    "build_video_source",
    "build_video_train_dataset",
    "check_video_experiment",
]

VIDEO_DATASET_KINDS = ("video_folder", "video_demo")
# the batch key of the whole clean window (T, 3, p, p), for losses that need the centre frame's
# clean neighbours (the video MAE loss); present only when asked for (with_clean_window)
CLEAN_WINDOW_KEY = "gt_window"


def build_video_source(spec: DatasetSpec, field: str = "data") -> VideoSource:
    """The clips a ``video_folder`` / ``video_demo`` spec names."""
    if spec.kind == "video_demo":
        return demo_video_source(spec.split, name=spec.display_name)
    if spec.kind == "video_folder":
        assert spec.path is not None
        return VideoSource(spec.display_name, list(discover_clips(spec.path)))
    raise ConfigError(
        f"task 'video_denoise' needs video sets (kind {' or '.join(VIDEO_DATASET_KINDS)}), "
        f"got kind '{spec.kind}'",
        field=f"{field}.kind",
    )


def _video_task(task: Any, where: str) -> VideoDenoise:
    if not isinstance(task, VideoDenoise):
        raise ConfigError(
            f"{where} is a video set but task.kind is '{task.kind}'; video sets go with task "
            "kind 'video_denoise' (image tasks read image sets)",
            field="task.kind",
        )
    return task


# --------------------------------------------------------------------------- training
class VideoWindowDataset(Dataset):
    """``dataset[(w, seed)]`` -> ``{"lq": (3T+1, p, p) packed noisy window, "gt": (3, p, p)
    centre frame or (3T, p, p), "index": w, "clip": c, "start": s}``; ``len()`` = windows.
    With ``clean_window`` every sample also holds the clean window ``(T, 3, p, p)`` under
    :data:`CLEAN_WINDOW_KEY` (the same crop, flip and frames as ``lq``)."""

    def __init__(self, source: VideoSource, task: VideoDenoise, patch_size: int, augment: bool,
                 clean_window: bool = False) -> None:
        self.source, self.task = source, task
        self.clean_window = bool(clean_window)
        self.patch_size, self.augment = int(patch_size), bool(augment)
        self.num_frames = task.num_frames
        self._windows: list[tuple[int, int]] = []  # (clip, start frame)
        problems = []
        for c, clip in enumerate(source.clips):
            n = len(clip)
            h, w = clip.frame_hw
            if n < self.num_frames:
                problems.append(f"{clip.describe()} has {n} frame(s), fewer than the window of "
                                f"{self.num_frames} (task.video.num_frames)")
            if h < self.patch_size or w < self.patch_size:
                problems.append(f"{clip.describe()} has {h}x{w} frames, smaller than the patch "
                                f"size {self.patch_size} (data.patch_size)")
            self._windows.extend((c, s) for s in range(n - self.num_frames + 1))
        if problems:
            raise DataError(f"video training set {source.name}: " + "; ".join(problems))

    def __len__(self) -> int:
        return len(self._windows)

    def with_clean_window(self) -> VideoWindowDataset:
        """The same windows, each sample also carrying its clean window."""
        return VideoWindowDataset(self.source, self.task, self.patch_size, self.augment, clean_window=True)

    def window(self, index: int) -> tuple[int, int]:
        """``(clip index, first frame)`` of window ``index``."""
        return self._windows[index]

    def __getitem__(self, key: tuple[int, int] | int) -> dict[str, Tensor | int]:
        if isinstance(key, (tuple, list)):
            index, sample_seed = int(key[0]), int(key[1])
        else:
            index = sample_seed = int(key)
        generator = torch.Generator().manual_seed(sample_seed)
        c, start = self._windows[index]
        clip = self.source.clips[c]
        p = self.patch_size
        top, left = random_crop_params(clip.frame_hw, p, generator)
        window = clip.load_crop(list(range(start, start + self.num_frames)), top, left, p, p)
        if self.augment:
            window = augment_aligned({"window": window}, generator)["window"]
        noisy, sigma = self.task.degrade_clip(window, generator)
        sample: dict[str, Tensor | int] = {
            "lq": pack_window(noisy, sigma).contiguous(),
            "gt": self.task.target_of(window).contiguous(),
            "index": index,
            "clip": c,
            "start": start,
        }
        if self.clean_window:
            sample[CLEAN_WINDOW_KEY] = window.contiguous()
        return sample


def check_video_experiment(cfg: ExperimentConfig) -> None:
    """The model reads this task's windows: a video model, the same T, the same target."""
    from resweep.models import model_info

    info = model_info(cfg.model.name)
    video = cfg.task.video
    if info["task"] != "video_denoise":
        raise ConfigError(
            f"model '{cfg.model.name}' restores single images; task 'video_denoise' needs a "
            "video model (e.g. fastdvdnet, fastdvdnet_tiny)",
            field="model.name",
        )
    args = {**info["defaults"], **cfg.model.kwargs}
    frames = args.get("num_frames")
    if frames is not None and frames != video.num_frames:
        raise ConfigError(
            f"model '{cfg.model.name}' reads {frames} frames but task.video.num_frames is "
            f"{video.num_frames}",
            field="task.video.num_frames",
        )
    target = args.get("target", "centre")
    if target != video.target:
        raise ConfigError(
            f"model '{cfg.model.name}' restores target '{target}' but task.video.target is "
            f"'{video.target}'",
            field="task.video.target",
        )


def build_video_train_dataset(cfg: ExperimentConfig, task: Any) -> VideoWindowDataset:
    video_task = _video_task(task, f"data.train ({cfg.data.train.kind})")
    check_video_experiment(cfg)
    source = build_video_source(cfg.data.train, field="data.train")
    source.set_cache()
    return VideoWindowDataset(source, video_task, cfg.data.patch_size, cfg.data.augment)


# --------------------------------------------------------------------------- evaluation
@dataclass
class EvalClip:
    """One evaluation clip: noisy and clean frames ``(N, 3, H, W)`` and its sigma ([0, 1])."""

    name: str
    frame_names: list[str]
    noisy: Tensor
    gt: Tensor
    sigma: float


@dataclass
class ClipEvalSet:
    """Fixed degraded clips: the same inputs for every trial of a study."""

    name: str
    clips: list[EvalClip] = field(default_factory=list)
    is_clip_set: bool = True  # how the engine's evaluator tells clip sets from image sets

    def __len__(self) -> int:
        return len(self.clips)


def build_clip_eval_set(
    spec: DatasetSpec, task: Any, *, seed: int, max_side: int | None = None
) -> ClipEvalSet:
    """Every clip of ``spec`` (its first ``spec.max_frames``), centre-cropped to ``max_side``,
    degraded with a generator seeded by ``(seed, clip index)``: one sigma per clip
    (``task.video.eval_noise_sigma`` when set, else the training one's rule)."""
    video_task = _video_task(task, f"evaluation set {spec.display_name} ({spec.kind})")
    source = build_video_source(spec, field="eval.sets")
    out = ClipEvalSet(name=source.name)
    for c, clip in enumerate(source.clips):
        n = len(clip) if spec.max_frames is None else min(len(clip), spec.max_frames)
        gt = clip.load_frames(list(range(n)))
        if max_side is not None:
            gt = centre_crop(gt, min(gt.shape[-2], max_side), min(gt.shape[-1], max_side))
        noisy, sigma = video_task.degrade_clip(
            gt, torch.Generator().manual_seed(eval_seed(seed, c)), video_task.config.video.eval_noise_sigma
        )
        names = [clip.frame_name(i) for i in range(n)]
        out.clips.append(EvalClip(clip.name, names, noisy.contiguous(), gt.contiguous(), sigma))
    return out
