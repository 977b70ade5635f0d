"""The model zoo: ``create_model(name, scale=..., **size_overrides)``, timm style.

Every model maps ``(B, C, h, w)`` images in [0, 1] to ``(B, C, h * scale, w * scale)`` (not
clamped), accepts any ``h, w``, and exposes ``scale``, ``arch_name`` and ``last_layer`` (the
final ``nn.Conv2d``, the layer proxy evaluation replaces).

Adding a model: its family's file with ``@register_model(name, **size_defaults)``, plus one line
per name in ``BUILTIN_MODELS`` (:mod:`resweep.name_tables`), which lists the names without
importing an architecture (swinir pulls in timm): a module is imported when a model of it is
built or described.
"""

from __future__ import annotations

import fnmatch
from typing import Any

from torch import nn

from resweep.errors import ConfigError
from resweep.models.registry import MODELS, ModelArgumentError, ModelSpec, register_model

__all__ = [
    "MODELS",
    "ModelArgumentError",
    "ModelSpec",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]

def create_model(name: str, scale: int = 1, in_channels: int = 3, **kwargs: Any) -> nn.Module:
    """Builds the registered model ``name``.

    ``kwargs`` override the variant's size defaults (``n_feats``, ``n_blocks``, ``depths``...);
    an argument the architecture does not take raises :class:`ModelArgumentError` (a
    ``ConfigError`` and ``TypeError``), an unknown name ``RegistryError`` with close matches.
    """
    spec = MODELS.get(name)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ConfigError(f"model '{name}': scale must be a positive integer, got {scale!r}")
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ConfigError(
            f"model '{name}': in_channels must be a positive integer, got {in_channels!r}"
        )
    scales = spec.supported_scales
    if scales is not None and scale not in scales:
        raise ConfigError(
            f"model '{name}' does not support scale={scale}; "
            f"supported: {', '.join(map(str, scales))}"
        )
    model = spec.build(scale=scale, in_channels=in_channels, **kwargs)
    model.scale = scale
    model.arch_name = name
    return model


def list_models(pattern: str | None = None) -> list[str]:
    """Sorted registered names, optionally filtered by a shell pattern (``"*_tiny"``)."""
    names = MODELS.names()
    return [n for n in names if fnmatch.fnmatchcase(n, pattern)] if pattern else names


def model_info(name: str) -> dict[str, Any]:
    """What a config may say about ``name`` without building it."""
    spec = MODELS.get(name)
    doc = (spec.factory.__doc__ or "").strip().splitlines()
    return {
        "name": name,
        "arch": spec.factory.__name__,
        "module": spec.factory.__module__,
        "task": spec.task,
        "scales": list(spec.supported_scales) if spec.supported_scales is not None else None,
        "defaults": dict(spec.defaults),
        "arguments": spec.accepted_arguments(),
        "description": doc[0] if doc else "",
    }
