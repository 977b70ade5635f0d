"""bf16 autocast, or nothing: the one switch training and evaluation share."""

from __future__ import annotations

import contextlib

import torch


def bf16_autocast(device_type: str, enabled: bool) -> contextlib.AbstractContextManager:
    return torch.autocast(device_type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()


__all__ = ["bf16_autocast"]
