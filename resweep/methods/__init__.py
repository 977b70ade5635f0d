"""Training methods: one file each, known by name in ``METHODS`` (and their knobs in ``METHOD_CONFIGS``).

Contract of this layer: a method is a ``MethodConfig`` subclass (its knobs, torch-free where
it can be, and the stages it needs through ``MethodConfig.stages``) plus a ``Method``
subclass whose hooks the engine calls (:mod:`resweep.methods.base`). Nothing here knows of
Ray; nothing outside a method's file knows what the method does.

Adding a method: write its file, then add ONE line to ``BUILTIN_METHODS`` in
:mod:`resweep.name_tables` (name -> config class, method class, as ``"module:attr"``). Nothing
is imported until a config names the method, as with models, so ``import resweep.config``
does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resweep import name_tables
from resweep.config_methods import MethodConfig
from resweep.name_tables import BUILTIN_METHODS
from resweep.registry import Registry

if TYPE_CHECKING:
    from resweep.methods.base import Method, MethodContext

# The tables live beneath the config (resweep.name_tables), which checks names there.
METHODS: Registry[type[Method]] = name_tables.METHODS
METHOD_CONFIGS: Registry[type[MethodConfig]] = name_tables.METHOD_CONFIGS


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: ``@register_method`` on a Method subclass with a ``name`` and a
    ``config_class`` (for methods defined outside ``BUILTIN_METHODS``, e.g. in a plugin)."""
    METHODS.register(cls.name)(cls)
    if cls.name not in METHOD_CONFIGS or METHOD_CONFIGS.get(cls.name) is not cls.config_class:
        METHOD_CONFIGS.register(cls.name)(cls.config_class)
    return cls


def build_methods(context: MethodContext) -> dict[str, Method]:
    """Instantiate the enabled methods of a config, in a stable order. Each method sees only
    its own artifacts, under the roles it declared (``eco.centroids`` -> ``centroids``)."""
    import dataclasses

    methods: dict[str, Method] = {}
    for name, cfg in sorted(context.config.enabled_methods.items()):
        prefix = f"{name}."
        own = {k.removeprefix(prefix): v for k, v in context.artifacts.items() if k.startswith(prefix)}
        methods[name] = METHODS.get(name)(cfg, dataclasses.replace(context, artifacts=own))
    return methods


def __getattr__(name: str) -> Any:
    # The torch-side names load on first use, so that this package stays torch-free.
    if name in ("Method", "MethodContext", "World"):
        from resweep.methods import base

        return getattr(base, name)
    raise AttributeError(f"module 'resweep.methods' has no attribute {name!r}")


__all__ = [
    "BUILTIN_METHODS",
    "METHODS",
    "METHOD_CONFIGS",
    "Method",
    "MethodConfig",
    "MethodContext",
    "World",
    "build_methods",
    "register_method",
]
