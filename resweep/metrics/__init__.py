"""Image-quality metrics as the restoration literature computes them.

Contract of this layer: pure functions of ``(prediction, target)`` tensors in [0, 1] (PSNR,
SSIM on Y or RGB, with the border crop the papers use, NIQE in ``resweep.metrics.niqe``); no
state, no training, no Ray. The torch-based functions load on first use so that
``resweep.metrics.directions`` (the table of metric directions the torch-free analysis layer
reads) stays cheap to import.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "batch_psnr": "image_quality",
    "image_metrics": "image_quality",
    "psnr": "image_quality",
    "quantize": "image_quality",
    "rgb_to_y": "image_quality",
    "ssim": "image_quality",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"resweep.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'resweep.metrics' has no attribute {name!r}")


__all__ = ["batch_psnr", "image_metrics", "psnr", "quantize", "rgb_to_y", "ssim"]
