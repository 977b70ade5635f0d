"""Image-quality metrics as the restoration literature computes them."""

from resweep.metrics.image_quality import (
    batch_psnr,
    image_metrics,
    psnr,
    quantize,
    rgb_to_y,
    ssim,
)

__all__ = ["batch_psnr", "image_metrics", "psnr", "quantize", "rgb_to_y", "ssim"]
