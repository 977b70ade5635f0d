"""Proxy evaluation's model set-up (RCL, METHODS.md section 4): freeze all but the last layer.

Applied by the trainer right after the model is built and its ``model.init_from`` weights are
loaded, before the optimiser is made (which takes only trainable parameters):

- ``train.trainable: last_layer`` sets ``requires_grad = False`` on every parameter except those
  of ``model.last_layer`` (the final convolution every resweep model exposes), so fine-tuning
  reads the pretrained representation and cannot change it. ``all`` (default) trains everything:
  the label-efficiency table does not say which the paper used, so it is a knob.
- ``model.reinit_last_layer: true`` replaces the pretrained last layer by a freshly initialised
  one (its own ``reset_parameters``, drawn from the run seed's RNG stream: each fine-tuning seed
  starts from a different head, as the paper's five trials do).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from resweep.errors import ConfigError

Trainable = Literal["all", "last_layer"]


def last_layer_of(model: nn.Module) -> nn.Module:
    layer = getattr(model, "last_layer", None)
    if not isinstance(layer, nn.Module):
        raise ConfigError(
            f"model '{getattr(model, 'arch_name', type(model).__name__)}' exposes no last_layer, "
            "needed by train.trainable: last_layer / model.reinit_last_layer",
            field="train.trainable",
        )
    return layer


def apply_finetune_setup(
    model: nn.Module,
    trainable: Trainable = "all",
    reinit_last_layer: bool = False,
    log: Callable[[str], None] = print,
) -> None:
    """Re-initialise and/or freeze in place (no-op with the defaults)."""
    if trainable not in ("all", "last_layer"):
        raise ConfigError(f"train.trainable must be 'all' or 'last_layer', got {trainable!r}")
    if not reinit_last_layer and trainable == "all":
        return
    head = last_layer_of(model)
    if reinit_last_layer:
        for module in head.modules():
            reset = getattr(module, "reset_parameters", None)
            if callable(reset):
                reset()
    if trainable == "last_layer":
        model.requires_grad_(False)
        head.requires_grad_(True)
        count = sum(p.numel() for p in head.parameters())
        total = sum(p.numel() for p in model.parameters())
        log(f"fine-tuning the last layer only: {count} of {total} parameters trainable")
