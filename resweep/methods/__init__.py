"""Training methods: one file each, registered by name in ``METHODS``."""

from __future__ import annotations

from resweep.methods.base import Method, MethodConfig, MethodContext, World
from resweep.registry import Registry

METHODS: Registry[type[Method]] = Registry("method")


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator: ``@register_method`` on a Method subclass with a ``name``."""
    METHODS.register(cls.name)(cls)
    return cls


def build_methods(context: MethodContext) -> dict[str, Method]:
    """Instantiate the enabled methods of a config, in a stable order."""
    methods: dict[str, Method] = {}
    for name, cfg in sorted(context.config.enabled_methods.items()):
        methods[name] = METHODS.get(name)(cfg, context)
    return methods


def _import_builtin_methods() -> None:
    # Each built-in method registers itself on import (one file + this list, like timm's models).
    import importlib

    for module in ("spn", "eco", "rcl", "noise2noise", "noise2self"):
        importlib.import_module(f"resweep.methods.{module}")


_import_builtin_methods()

__all__ = ["METHODS", "Method", "MethodConfig", "MethodContext", "World", "build_methods", "register_method"]
