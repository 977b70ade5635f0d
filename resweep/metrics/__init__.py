"""Image-quality metrics as the restoration literature computes them.

Contract of this layer: pure functions of ``(prediction, target)`` tensors in [0, 1] (PSNR,
SSIM on Y or RGB, with the border crop the papers use); no state, no training, no Ray.
"""

from resweep.metrics.image_quality import (
    batch_psnr,
    image_metrics,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
)

__all__ = ["batch_psnr", "image_metrics", "psnr", "quantize", "rgb_to_y", "ssim"]
