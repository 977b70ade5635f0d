"""Evaluation on full images: per-image PSNR/SSIM (RGB and Y) for the model and the baseline,
and NIQE (no reference; slow) on the sets that ask for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resweep.data.images import save_png
from resweep.engine.amp import bf16_autocast
from resweep.engine.evaluate_clips import ClipSetEvaluator
from resweep.metrics import image_metrics
from resweep.metrics.niqe import niqe

METRIC_NAMES = ("psnr", "ssim", "psnr_y", "ssim_y")
NIQE_METRIC = "niqe"


@dataclass
class EvalResult:
    """Means per set (``eval.<set>.<metric>``) and one record per image."""

    means: dict[str, float] = field(default_factory=dict)
    per_image: list[dict[str, Any]] = field(default_factory=list)
    #: images per set whose output had a NaN/inf (before clamping to [0, 1])
    nonfinite: dict[str, int] = field(default_factory=dict)


def set_averages(means: dict[str, float], averages: dict[str, list[str]]) -> dict[str, float]:
    """``eval.<name>.<metric>`` = the mean over the named sets of their per-set means (each set
    weighs the same, as the papers' "Avg." columns), for every metric and its baseline."""
    out: dict[str, float] = {}
    for name, members in averages.items():
        for m in METRIC_NAMES:
            for suffix in ("", "_baseline"):
                values = [means[f"eval.{s}.{m}{suffix}"] for s in members]
                out[f"eval.{name}.{m}{suffix}"] = sum(values) / len(values)
    return out


class Evaluator:
    """Holds the evaluation sets and the (constant) baseline scores, computed once."""

    def __init__(
        self,
        eval_sets: list[Any],
        task: Any,
        crop_border: int,
        device: torch.device,
        averages: dict[str, list[str]] | None = None,
        niqe_sets: list[bool | str] | None = None,
    ):
        self.eval_sets = eval_sets
        self.averages = dict(averages or {})
        self.task = task
        self.crop_border = crop_border
        self.device = device
        # one flag per set (eval.sets[i].niqe): NIQE costs far more than PSNR, so it is opt-in;
        # true or "y" measures it on Y, "gray" on MATLAB rgb2gray
        self.niqe_sets = list(niqe_sets) if niqe_sets is not None else [False] * len(eval_sets)
        self._niqe_convert = {
            s.name: ("y" if flag is True else flag) for s, flag in zip(eval_sets, self.niqe_sets, strict=True)
        }
        self._baseline: dict[tuple[str, str], dict[str, float]] = {}
        # video sets (ClipEvalSet) are evaluated clip by clip in their own module
        self._clip_sets = {
            s.name: ClipSetEvaluator(s, task, crop_border, device)
            for s in eval_sets if getattr(s, "is_clip_set", False)
        }
        for eval_set, with_niqe in zip(eval_sets, self.niqe_sets, strict=True):
            if eval_set.name in self._clip_sets:
                continue
            for image_name, lq, gt in eval_set.items:
                baseline = task.baseline(lq.unsqueeze(0)).squeeze(0).clamp(0, 1)
                scores = image_metrics(baseline, gt, crop_border=crop_border)
                if with_niqe:
                    scores[NIQE_METRIC] = self._niqe(baseline, eval_set.name, image_name)
                self._baseline[(eval_set.name, image_name)] = scores

    def _niqe(self, image: torch.Tensor, set_name: str, image_name: str) -> float:
        try:
            return niqe(image, crop_border=self.crop_border, convert_to=self._niqe_convert[set_name])
        except ValueError as exc:
            raise ValueError(
                f"NIQE on eval set '{set_name}', image '{image_name}' "
                f"({image.shape[-2]}x{image.shape[-1]}, crop_border {self.crop_border}): {exc}. "
                "Turn niqe off for this set or evaluate larger images (eval.max_side)."
            ) from exc

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
            for eval_set, with_niqe in zip(self.eval_sets, self.niqe_sets, strict=True):
                if eval_set.name in self._clip_sets:
                    clips = self._clip_sets[eval_set.name].evaluate(model, iteration, autocast, save_dir)
                    result.means.update(clips.means)
                    result.per_image.extend(clips.per_image)
                    continue
                names = (*METRIC_NAMES, NIQE_METRIC) if with_niqe else METRIC_NAMES
                sums = dict.fromkeys(names, 0.0)
                base_sums = dict.fromkeys(names, 0.0)
                for image_name, lq, gt in eval_set.items:
                    with bf16_autocast(self.device.type, autocast):
                        pred = model(lq.unsqueeze(0).to(self.device))
                    pred = pred.float().squeeze(0)
                    if not bool(torch.isfinite(pred).all()):
                        result.nonfinite[eval_set.name] = result.nonfinite.get(eval_set.name, 0) + 1
                    pred = pred.clamp(0, 1).cpu()
                    if save_dir is not None:
                        save_png(pred, save_dir / eval_set.name / f"{Path(image_name).stem}.png")
                    scores = image_metrics(pred, gt, crop_border=self.crop_border)
                    if with_niqe:
                        scores[NIQE_METRIC] = self._niqe(pred, eval_set.name, image_name)
                    base = self._baseline[(eval_set.name, image_name)]
                    record: dict[str, Any] = {
                        "iteration": iteration,
                        "set": eval_set.name,
                        "image": image_name,
                    }
                    for m in names:
                        record[m] = scores[m]
                        record[f"{m}_baseline"] = base[m]
                        sums[m] += scores[m]
                        base_sums[m] += base[m]
                    result.per_image.append(record)
                n = max(1, len(eval_set.items))
                for m in names:
                    result.means[f"eval.{eval_set.name}.{m}"] = sums[m] / n
                    result.means[f"eval.{eval_set.name}.{m}_baseline"] = base_sums[m] / n
            result.means.update(set_averages(result.means, self.averages))
        finally:
            model.train(was_training)
        return result
