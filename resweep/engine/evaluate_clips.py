"""Evaluation on whole clips: a sliding window over every frame, PSNR/SSIM per frame averaged
per clip, and the set's value the mean over its clips (each clip weighs the same, as the
per-sequence averages of video denoising papers).

Frame ``t`` is restored from the window centred on it (mirrored at the clip's ends, see
:func:`~resweep.degradations.video_denoise.window_indices`); a model restoring all frames of a
window contributes its centre frame. The no-learning reference is the noisy frame.

One per-image record per clip: ``image`` and ``clip`` are the clip's name, ``frames`` how many
frames were evaluated (``first_frame``/``last_frame`` their file names) and ``<metric>_frames``
the per-frame values in frame order; the table code pairs trials by ``(set, image)`` = clip.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resweep.data.images import save_png
from resweep.degradations.video_denoise import pack_window, window_indices
from resweep.engine.amp import bf16_autocast
from resweep.metrics import image_metrics

CLIP_METRIC_NAMES = ("psnr", "ssim", "psnr_y", "ssim_y")


@dataclass
class ClipSetResult:
    means: dict[str, float] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    nonfinite_frames: int = 0


def _clip_means(per_frame: list[dict[str, float]]) -> dict[str, float]:
    return {m: sum(f[m] for f in per_frame) / len(per_frame) for m in CLIP_METRIC_NAMES}


class ClipSetEvaluator:
    """Evaluates one :class:`~resweep.data.video.ClipEvalSet`; the noisy-input scores are
    computed once."""

    def __init__(self, clip_set: Any, task: Any, crop_border: int, device: torch.device,
                 frames_per_batch: int = 4) -> None:
        self.clip_set = clip_set
        self.task = task
        self.crop_border = crop_border
        self.device = device
        self.frames_per_batch = frames_per_batch
        self.baseline: dict[str, list[dict[str, float]]] = {
            clip.name: [
                image_metrics(clip.noisy[t].clamp(0, 1), clip.gt[t], crop_border=crop_border)
                for t in range(clip.gt.shape[0])
            ]
            for clip in clip_set.clips
        }

    def _restore(self, model: nn.Module, clip: Any, autocast: bool) -> torch.Tensor:
        n, t_win = clip.noisy.shape[0], self.task.num_frames
        outputs = []
        for start in range(0, n, self.frames_per_batch):
            centres = range(start, min(n, start + self.frames_per_batch))
            windows = torch.stack([clip.noisy[window_indices(t, t_win, n)] for t in centres])
            x = pack_window(windows, clip.sigma).to(self.device)
            with bf16_autocast(self.device.type, autocast):
                pred = model(x).float()
            if pred.shape[1] != 3:  # a model restoring every frame of the window: its centre
                pred = pred.reshape(pred.shape[0], t_win, 3, *pred.shape[-2:])[:, t_win // 2]
            outputs.append(pred.cpu())
        return torch.cat(outputs)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, iteration: int, autocast: bool = False,
                 save_dir: Path | None = None) -> ClipSetResult:
        result = ClipSetResult()
        name = self.clip_set.name
        clip_means, base_means = [], []
        for clip in self.clip_set.clips:
            pred = self._restore(model, clip, autocast)
            finite = torch.isfinite(pred).flatten(1).all(dim=1)
            result.nonfinite_frames += int((~finite).sum())
            pred = pred.clamp(0, 1)
            per_frame = [image_metrics(pred[t], clip.gt[t], crop_border=self.crop_border)
                         for t in range(pred.shape[0])]
            if save_dir is not None:
                for t, frame in enumerate(clip.frame_names):
                    save_png(pred[t], save_dir / name / clip.name / f"{frame}.png")
            scores, base = _clip_means(per_frame), _clip_means(self.baseline[clip.name])
            clip_means.append(scores)
            base_means.append(base)
            record: dict[str, Any] = {
                "iteration": iteration, "set": name, "image": clip.name, "clip": clip.name,
                "frames": len(clip.frame_names), "first_frame": clip.frame_names[0],
                "last_frame": clip.frame_names[-1],
            }
            for m in CLIP_METRIC_NAMES:
                record[m] = scores[m]
                record[f"{m}_baseline"] = base[m]
                record[f"{m}_frames"] = [f[m] for f in per_frame]
            result.per_image.append(record)
        for m in CLIP_METRIC_NAMES:
            result.means[f"eval.{name}.{m}"] = sum(c[m] for c in clip_means) / len(clip_means)
            result.means[f"eval.{name}.{m}_baseline"] = sum(b[m] for b in base_means) / len(base_means)
        return result

    def save_references(self, image_root: Path) -> None:
        """Clean and noisy frames once (``_gt/<set>/<clip>/``, ``_baseline/<set>/<clip>/``)."""
        for clip in self.clip_set.clips:
            for t, frame in enumerate(clip.frame_names):
                for folder, image in (("_gt", clip.gt[t]), ("_baseline", clip.noisy[t])):
                    path = image_root / folder / self.clip_set.name / clip.name / f"{frame}.png"
                    if not path.exists():
                        save_png(image.clamp(0, 1), path)
