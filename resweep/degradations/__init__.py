"""Degradation operators (MATLAB-compatible bicubic resizing)."""

from resweep.degradations.imresize import bicubic_downsample, bicubic_upsample, imresize

__all__ = ["bicubic_downsample", "bicubic_upsample", "imresize"]
