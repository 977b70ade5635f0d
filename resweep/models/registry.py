"""The model registry: registered name -> architecture + default size arguments."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from torch import nn

from resweep import name_tables
from resweep.errors import ConfigError
from resweep.registry import Registry

F = TypeVar("F", bound=Callable[..., nn.Module])

# Arguments create_model passes itself; they may not be registered as defaults.
_RESERVED = ("scale", "in_channels")


class ModelArgumentError(ConfigError, TypeError):
    """``create_model`` got an argument the architecture does not take.

    Also a ``TypeError`` so code that expects Python's usual bad-keyword error still catches it.
    """


@dataclass(frozen=True)
class ModelSpec:
    """One registered variant: ``factory(scale=, in_channels=, **{**defaults, **overrides})``."""

    name: str
    factory: Callable[..., nn.Module]
    defaults: Mapping[str, Any] = field(default_factory=dict)

    @property
    def supported_scales(self) -> tuple[int, ...] | None:
        return getattr(self.factory, "supported_scales", None)

    @property
    def task(self) -> str:
        return getattr(self.factory, "task", "sr")

    def accepted_arguments(self) -> list[str] | None:
        """Names the factory takes besides scale/in_channels; ``None`` if it takes ``**kwargs``."""
        params = inspect.signature(self.factory).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.name not in _RESERVED
        ]

    def build(self, scale: int, in_channels: int, **overrides: Any) -> nn.Module:
        accepted = self.accepted_arguments()
        if accepted is not None:
            bad = sorted(set(overrides) - set(accepted))
            if bad:
                raise ModelArgumentError(
                    f"model '{self.name}' got unknown argument(s) {', '.join(map(repr, bad))}; "
                    f"it accepts: {', '.join(accepted)}"
                )
        kwargs = {**self.defaults, **overrides}
        return self.factory(scale=scale, in_channels=in_channels, **kwargs)


#: the table in resweep.name_tables, where the config checks model names without importing
#: an architecture; a built-in model's module fills in its ``ModelSpec`` when imported
MODELS: Registry[ModelSpec] = name_tables.MODELS


def register_model(name: str, **defaults: Any) -> Callable[[F], F]:
    """Registers a model class or factory under ``name`` with default size arguments.

    The target is called as ``target(scale=..., in_channels=..., **defaults, **overrides)``.
    Decorators stack, so one class can provide several named variants::

        @register_model("edsr_tiny", n_blocks=2, n_feats=16)
        @register_model("edsr_baseline", n_blocks=16, n_feats=64)
        class EDSR(RestorationNet): ...
    """
    bad = [k for k in defaults if k in _RESERVED]
    if bad:
        raise ValueError(f"model '{name}': {bad} are passed by create_model, not defaults")

    def decorator(target: F) -> F:
        MODELS.register(name)(ModelSpec(name, target, MappingProxyType(dict(defaults))))
        return target

    return decorator
