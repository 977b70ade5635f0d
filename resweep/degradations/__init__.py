"""Degradations: how a clean image becomes the network input.

Contract of this layer: ``imresize`` is MATLAB-compatible bicubic resizing (linear, so ECO's
``D(y_t) = x_t`` holds); ``tasks.TASKS`` is the one registry of task kinds (``TaskConfig.kind``
is checked against it, a task's ``allowed_scales`` says which scales it takes). Random draws
come from the caller's ``torch.Generator``. Knows nothing of training, methods or Ray.
"""

from resweep.degradations.imresize import bicubic_downsample, bicubic_upsample, imresize

__all__ = ["bicubic_downsample", "bicubic_upsample", "imresize"]
