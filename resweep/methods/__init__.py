"""Training methods: one file each, known by name in ``METHODS`` (and their knobs in ``METHOD_CONFIGS``).

Contract of this layer: a method is a ``MethodConfig`` subclass (its knobs, torch-free where
it can be, and the stages it needs through ``MethodConfig.stages``) plus a ``Method``
subclass whose hooks the engine calls (:mod:`resweep.methods.base`). Nothing here knows of
Ray; nothing outside a method's file knows what the method does.

Adding a method: write its file, then add ONE line to ``BUILTIN_METHODS`` below (name ->
config class, method class, as ``"module:attr"``). Nothing is imported until a config names
the method, as with models, so ``import resweep.config`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from resweep.methods.method_config import MethodConfig
from resweep.registry import Registry

if TYPE_CHECKING:
    from resweep.methods.base import Method, MethodContext

#: name -> (config class, Method class), imported on first use.
BUILTIN_METHODS: dict[str, tuple[str, str]] = {
    "spn": ("resweep.methods.spn:SPNConfig", "resweep.methods.spn:SPN"),
    "eco": ("resweep.methods.eco_config:ECOConfig", "resweep.methods.eco:ECO"),
    "mae_loss": ("resweep.methods.mae_loss:MaeLossConfig", "resweep.methods.mae_loss:MaeLoss"),
    "perceptual": ("resweep.methods.perceptual:PerceptualConfig", "resweep.methods.perceptual:Perceptual"),
    "rcl": ("resweep.methods.rcl:RCLConfig", "resweep.methods.rcl:RCL"),
    "noise2noise": ("resweep.methods.noise2noise:Noise2NoiseConfig", "resweep.methods.noise2noise:Noise2Noise"),
    "noise2self": ("resweep.methods.noise2self:Noise2SelfConfig", "resweep.methods.noise2self:Noise2Self"),
}

METHODS: Registry[type[Method]] = Registry("method")
METHOD_CONFIGS: Registry[type[MethodConfig]] = Registry("method")
for _name, (_config, _method) in BUILTIN_METHODS.items():
    METHOD_CONFIGS.register_lazy(_name, _config)
    METHODS.register_lazy(_name, _method)


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
