"""The names a config may use, one registry per kind: data, beneath the config layer.

Each table starts with the built-in names as lazy ``"module:attr"`` entries, so that a config
validates a task kind, optimiser, pixel loss, method, stage kind or model name without
importing its implementation (or torch). The implementation's module fills in the real entry
when it is imported (``@register_task``, ``@register_model``, ...), and ``TABLE.get(name)``
imports it on first use. Nothing here imports anything above :mod:`resweep.registry`, so the
config can look names up here and nothing below the config ever needs to import it back
(the layer order: :mod:`resweep.layers`).

Adding a built-in: write its module (with its decorator, if the kind has one), then add ONE
line to the ``BUILTIN_*`` table of its kind below. A plugin outside the package registers
itself with the decorator alone.
"""

from __future__ import annotations

from typing import Any

from resweep.registry import Registry

__all__ = [
    "BUILTIN_METHODS",
    "BUILTIN_MODELS",
    "BUILTIN_OPTIMIZERS",
    "BUILTIN_PIXEL_LOSSES",
    "BUILTIN_STAGES",
    "BUILTIN_TASKS",
    "METHODS",
    "METHOD_CONFIGS",
    "MODELS",
    "OPTIMIZERS",
    "PIXEL_LOSSES",
    "STAGES",
    "TASKS",
]

#: task kind -> its ``Task`` subclass (``TaskConfig.kind``); resweep/degradations/
BUILTIN_TASKS: dict[str, str] = {
    "sr": "resweep.degradations.tasks:BicubicSR",
    "denoise": "resweep.degradations.tasks:Denoise",
    "denoise_sr": "resweep.degradations.tasks:DenoiseSR",
    "realworld_sr": "resweep.degradations.tasks:RealWorldSR",
    "hetero_denoise": "resweep.degradations.tasks:HeteroscedasticDenoise",
    "hetero_denoise_sr": "resweep.degradations.tasks:HeteroscedasticDenoiseSR",
    "video_denoise": "resweep.degradations.video_denoise:VideoDenoise",
}

#: optimiser name -> builder ``(params, OptimConfig) -> Optimizer`` (``OptimConfig.name``)
BUILTIN_OPTIMIZERS: dict[str, str] = {
    "adam": "resweep.engine.optim:_adam",
    "adamw": "resweep.engine.optim:_adamw",
    "lamb": "resweep.engine.optim:_lamb",
    "sgd": "resweep.engine.optim:_sgd",
}

#: pixel loss name -> ``loss(prediction, target)`` (``LossConfig.pixel``)
BUILTIN_PIXEL_LOSSES: dict[str, str] = {
    "l1": "resweep.losses:l1_loss",
    "l2": "resweep.losses:l2_loss",
    "charbonnier": "resweep.losses:charbonnier_loss",
}

#: method name -> (its ``MethodConfig`` subclass, its ``Method`` class) (``methods.<name>``)
BUILTIN_METHODS: dict[str, tuple[str, str]] = {
    "spn": ("resweep.methods.spn:SPNConfig", "resweep.methods.spn:SPN"),
    "eco": ("resweep.methods.eco_config:ECOConfig", "resweep.methods.eco:ECO"),
    "mae_loss": ("resweep.methods.mae_loss:MaeLossConfig", "resweep.methods.mae_loss:MaeLoss"),
    "perceptual": ("resweep.methods.perceptual:PerceptualConfig", "resweep.methods.perceptual:Perceptual"),
    "rcl": ("resweep.methods.rcl:RCLConfig", "resweep.methods.rcl:RCL"),
    "noise2noise": ("resweep.methods.noise2noise:Noise2NoiseConfig", "resweep.methods.noise2noise:Noise2Noise"),
    "noise2self": ("resweep.methods.noise2self:Noise2SelfConfig", "resweep.methods.noise2self:Noise2Self"),
}

#: stage kind -> its producer, registered with its definition class by ``@register_stage``
BUILTIN_STAGES: dict[str, str] = {
    "train": "resweep.stages.train:produce_train",
    "eco_centroids": "resweep.stages.eco_centroids:produce_eco_centroids",
    "mae_pretrain": "resweep.stages.mae_pretrain:produce_mae_pretrain",
    "mae_video_pretrain": "resweep.stages.mae_video_pretrain:produce_mae_video_pretrain",
}

#: model name -> the architecture whose ``@register_model`` gives the name its size defaults
BUILTIN_MODELS: dict[str, str] = {
    "edsr_baseline": "resweep.models.edsr:EDSR",
    "edsr": "resweep.models.edsr:EDSR",
    "edsr_tiny": "resweep.models.edsr:EDSR",
    "rcan": "resweep.models.rcan:RCAN",
    "rcan_tiny": "resweep.models.rcan:RCAN",
    "swinir_light": "resweep.models.swinir:SwinIR",
    "swinir_tiny": "resweep.models.swinir:SwinIR",
    "dncnn": "resweep.models.dncnn:DnCNN",
    "dncnn_tiny": "resweep.models.dncnn:DnCNN",
    "unet": "resweep.models.unet:UNet",
    "unet_tiny": "resweep.models.unet:UNet",
    "sr_residual": "resweep.models.residual_sr:ResidualSR",
    "sr_residual_tiny": "resweep.models.residual_sr:ResidualSR",
    "fastdvdnet": "resweep.models.fastdvdnet:FastDVDnet",
    "fastdvdnet_tiny": "resweep.models.fastdvdnet:FastDVDnet",
}

# The entries' types live above this layer; each implementation module re-exports its table
# with its own type (``TASKS: Registry[type[Task]]`` in resweep.degradations.tasks, ...).
TASKS: Registry[Any] = Registry("task")
OPTIMIZERS: Registry[Any] = Registry("optimiser")
PIXEL_LOSSES: Registry[Any] = Registry("pixel loss")
METHODS: Registry[Any] = Registry("method")
METHOD_CONFIGS: Registry[Any] = Registry("method")
STAGES: Registry[Any] = Registry("stage kind")
MODELS: Registry[Any] = Registry("model")

for _table, _builtins in (
    (TASKS, BUILTIN_TASKS),
    (OPTIMIZERS, BUILTIN_OPTIMIZERS),
    (PIXEL_LOSSES, BUILTIN_PIXEL_LOSSES),
    (STAGES, BUILTIN_STAGES),
    (MODELS, BUILTIN_MODELS),
):
    for _name, _target in _builtins.items():
        _table.register_lazy(_name, _target)
for _name, (_config, _method) in BUILTIN_METHODS.items():
    METHOD_CONFIGS.register_lazy(_name, _config)
    METHODS.register_lazy(_name, _method)
