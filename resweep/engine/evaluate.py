"""Evaluation on full images: per-image PSNR/SSIM (RGB and Y) for the model and the baseline."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from resweep.engine.evaluate_clips import ClipSetEvaluator
from resweep.metrics import image_metrics

METRIC_NAMES = ("psnr", "ssim", "psnr_y", "ssim_y")


@dataclass
class EvalResult:
    """Means per set (``eval.<set>.<metric>``) and one record per image."""

    means: dict[str, float] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)


class Evaluator:
    """Holds the evaluation sets and the (constant) baseline scores, computed once."""

    def __init__(self, eval_sets: list[Any], task: Any, crop_border: int, device: torch.device):
        self.eval_sets = eval_sets
        self.task = task
        self.crop_border = crop_border
        self.device = device
        self._baseline: dict[tuple[str, str], dict[str, float]] = {}
        # video sets (ClipEvalSet) are evaluated clip by clip in their own module
        self._clip_sets = {
            s.name: ClipSetEvaluator(s, task, crop_border, device)
            for s in eval_sets if getattr(s, "is_clip_set", False)
        }
        for eval_set in eval_sets:
            if eval_set.name in self._clip_sets:
                continue
            for image_name, lq, gt in eval_set.items:
                baseline = task.baseline(lq.unsqueeze(0)).squeeze(0)
                self._baseline[(eval_set.name, image_name)] = image_metrics(
                    baseline.clamp(0, 1), gt, crop_border=crop_border
                )

    def save_references(self, image_root: Path) -> None:
        """Ground truth and baseline once per study/run (``images/_gt``, ``images/_baseline``)."""
        for eval_set in self.eval_sets:
            if eval_set.name in self._clip_sets:
                self._clip_sets[eval_set.name].save_references(image_root)
                continue
            for image_name, lq, gt in eval_set.items:
                stem = Path(image_name).stem
                gt_path = image_root / "_gt" / eval_set.name / f"{stem}.png"
                if not gt_path.exists():
                    save_png(gt, gt_path)
                base_path = image_root / "_baseline" / eval_set.name / f"{stem}.png"
                if not base_path.exists():
                    save_png(self.task.baseline(lq.unsqueeze(0)).squeeze(0), base_path)

    @torch.no_grad()
    def evaluate(
        self, model: nn.Module, iteration: int, autocast: bool = False, save_dir: Path | None = None
    ) -> EvalResult:
        result = EvalResult()
        was_training = model.training
        model.eval()
        try:
            for eval_set in self.eval_sets:
                if eval_set.name in self._clip_sets:
                    clips = self._clip_sets[eval_set.name].evaluate(model, iteration, autocast, save_dir)
                    result.means.update(clips.means)
                    result.per_image.extend(clips.per_image)
                    continue
                sums = dict.fromkeys(METRIC_NAMES, 0.0)
                base_sums = dict.fromkeys(METRIC_NAMES, 0.0)
                for image_name, lq, gt in eval_set.items:
                    ctx = (
                        torch.autocast(self.device.type, dtype=torch.bfloat16)
                        if autocast
                        else contextlib.nullcontext()
                    )
                    with ctx:
                        pred = model(lq.unsqueeze(0).to(self.device))
                    pred = pred.float().squeeze(0).clamp(0, 1).cpu()
                    if save_dir is not None:
                        save_png(pred, save_dir / eval_set.name / f"{Path(image_name).stem}.png")
                    scores = image_metrics(pred, gt, crop_border=self.crop_border)
                    base = self._baseline[(eval_set.name, image_name)]
                    record: dict[str, Any] = {
                        "iteration": iteration,
                        "set": eval_set.name,
                        "image": image_name,
                    }
                    for m in METRIC_NAMES:
                        record[m] = scores[m]
                        record[f"{m}_baseline"] = base[m]
                        sums[m] += scores[m]
                        base_sums[m] += base[m]
                    result.per_image.append(record)
                n = max(1, len(eval_set.items))
                for m in METRIC_NAMES:
                    result.means[f"eval.{eval_set.name}.{m}"] = sums[m] / n
                    result.means[f"eval.{eval_set.name}.{m}_baseline"] = base_sums[m] / n
        finally:
            model.train(was_training)
        return result


def save_png(image: torch.Tensor, path: Path) -> None:
    """8-bit RGB PNG of a (3,H,W) image in [0,1], written atomically."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    os.replace(tmp, path)
