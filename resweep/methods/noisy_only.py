"""Training data for self-supervised methods: the clean image is taken out of every sample.

RCL, Noise2Noise and Noise2Self learn from noisy images only. Rather than trusting every code
path not to read ``batch["gt"]``, their training dataset drops it (optionally after using it to
synthesise another noisy observation, as Noise2Noise's simulation must): a stray read of the
clean target then fails loudly with a ``KeyError`` instead of silently supervising.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset

CLEAN_KEY = "gt"

SampleFn = Callable[[dict[str, Any], Any], dict[str, Any]]


class WithoutCleanTarget(Dataset):
    """Wraps a keyed training dataset; ``sample_fn(sample, key)`` may add noisy tensors before
    the clean ``gt`` is removed."""

    def __init__(self, base: Any, sample_fn: SampleFn | None = None) -> None:
        self.base = base
        self.sample_fn = sample_fn

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key: Any) -> dict[str, Tensor | int]:
        sample = dict(self.base[key])
        if self.sample_fn is not None:
            sample = self.sample_fn(sample, key)
        sample.pop(CLEAN_KEY, None)
        return sample

    def sample_with_clean(self, key: Any) -> dict[str, Any]:
        """The sample ``__getitem__`` gives, clean ``gt`` kept: for diagnostics that measure the
        trained network against the truth (never for a loss)."""
        sample = dict(self.base[key])
        if self.sample_fn is not None:
            sample = self.sample_fn(sample, key)
        return sample


def with_clean_target(dataset: Any, key: Any) -> dict[str, Any]:
    """``dataset[key]`` with its clean image where the data has one, through a
    :class:`WithoutCleanTarget` wrapper too (diagnostics only)."""
    if isinstance(dataset, WithoutCleanTarget):
        return dataset.sample_with_clean(key)
    return dict(dataset[key])
