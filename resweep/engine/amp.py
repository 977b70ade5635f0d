"""bf16 autocast, or nothing: the one switch training and evaluation share, and the precision
a method's loss terms run in.

Loss networks (VGG features, MAE encoders, RCL's consistency encoder, SPN's negatives) and
distances (feature L1/L2, histogram overlaps) run in fp32 by default even when ``train.amp``
puts the model's forward in bf16: a feature distance that should shrink towards 0 would
otherwise carry rounding noise of ~0.4% of the features. A method opts into bf16 with
``methods.<name>.loss_precision: bf16`` (faster on GPU; follows ``train.amp``).
"""

from __future__ import annotations

import contextlib

import torch

from resweep.config_methods import LossPrecision


def bf16_autocast(device_type: str, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


def loss_autocast(device_type: str, amp: bool, precision: LossPrecision) -> contextlib.AbstractContextManager:
    """The autocast state of a method's ``loss_terms``: bf16 only when the run uses autocast
    (``amp``) and the method opted in; otherwise autocast is switched off, also inside an
    enclosing autocast, so that the loss sees the fp32 prediction and computes in fp32."""
    if precision == "bf16" and amp:
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return torch.autocast(device_type, enabled=False)


__all__ = ["LossPrecision", "bf16_autocast", "loss_autocast"]
