"""Which way each metric improves: the one table the study objectives and the analysis read.

Kept free of torch so that the analysis layer can import it cheaply.
"""

from __future__ import annotations

from typing import Literal

Direction = Literal["max", "min"]

#: metric base name (the last dotted part without ``_y`` / ``_baseline``) -> direction.
METRIC_DIRECTIONS: dict[str, Direction] = {
    "psnr": "max",
    "ssim": "max",
    "niqe": "min",  # a distance to the pristine model: lower is more natural
}


def metric_direction(metric: str, mode: str | None = None) -> str:
    """``"max"`` or ``"min"`` for ``eval.Set5.psnr_y``, ``niqe``, ``time_per_step`` ...

    An explicit ``mode`` (an objective's own) wins; metrics not in the table (losses, times,
    collapse counts) improve downwards.
    """
    if mode:
        return mode
    name = metric.rsplit(".", 1)[-1]
    for base, direction in METRIC_DIRECTIONS.items():
        if name == base or name.startswith(f"{base}_"):
            return direction
    return "min"
