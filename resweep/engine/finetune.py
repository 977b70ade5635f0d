"""Proxy evaluation's model set-up (RCL, METHODS.md section 4): freeze all but the last layer.

Applied by the trainer right after the model is built and its ``model.init_from`` weights are
loaded, before the optimiser is made (which takes only trainable parameters):

- ``train.trainable: last_layer`` sets ``requires_grad = False`` on every parameter except those
  of ``model.last_layer`` (the final convolution every resweep model exposes), so fine-tuning
  reads the pretrained representation and cannot change it. ``all`` (default) trains everything:
  the label-efficiency table does not say which the paper used, so it is a knob.
- ``model.init_new_head: true`` lets ``init_from`` lack parameters the model has (a scale-1
  denoising backbone fine-tuned for SR: the U-Net's upsampler is new). Those keep their fresh
  initialisation and count as part of the head (trainable under ``last_layer``). With it, the
  weights of a pixel-shuffle upsampler made for another scale are new too (an x3 model started
  from an x2 one, as EDSR's and ECO's x3/x4 recipes do; EDSR's code skips the mis-shaped
  ``tail`` likewise). Other extra or mis-shaped weights in the file are still errors.
- ``model.reinit_last_layer: true`` replaces the pretrained last layer by a freshly initialised
  one (its own ``reset_parameters``, drawn from the run seed's RNG stream: each fine-tuning seed
  starts from a different head, as the paper's five trials do).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Literal

import torch
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


def load_initial_weights(
    model: nn.Module, state: Mapping[str, torch.Tensor], *, allow_new_head: bool = False, source: str = ""
) -> list[str]:
    """Load ``state`` into ``model``; returns the parameter names it did not provide (the new
    head), which must be empty unless ``allow_new_head``."""
    own = model.state_dict()
    if allow_new_head:
        state = _without_other_scale_upsampler(model, state)
    unexpected = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    mismatched = [k for k in state if k in own and tuple(state[k].shape) != tuple(own[k].shape)]
    problems = []
    if unexpected:
        problems.append(f"weights the model does not have: {', '.join(unexpected[:5])}")
    if mismatched:
        shapes = ", ".join(f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mismatched[:5])
        problems.append(f"shapes that differ (file vs model): {shapes}")
    if missing and not allow_new_head:
        problems.append(
            f"weights missing from the file: {', '.join(missing[:5])} (set model.init_new_head: true "
            "if they are a new task head, e.g. an upsampler for SR)"
        )
    if problems:
        raise ConfigError(
            f"model.init_from {source} does not fit model '{getattr(model, 'arch_name', '?')}': "
            + "; ".join(problems),
            field="model.init_from",
        )
    model.load_state_dict(dict(state), strict=False)
    parameter_names = {n for n, _ in model.named_parameters()}
    return [k for k in missing if k in parameter_names]


def _without_other_scale_upsampler(
    model: nn.Module, state: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """``state`` less the upsampler weights that do not fit ``model``'s upsampler: those of a
    model of another scale (x2 -> x3: every stage differs; x2 -> x4: the second stage is new)."""
    from resweep.models.common import Upsampler

    own = model.state_dict()
    prefixes = tuple(f"{name}." for name, module in model.named_modules() if isinstance(module, Upsampler))
    out = dict(state)
    for key in list(out):
        if key.startswith(prefixes) and (key not in own or tuple(out[key].shape) != tuple(own[key].shape)):
            del out[key]
    return out


def apply_finetune_setup(
    model: nn.Module,
    trainable: Trainable = "all",
    reinit_last_layer: bool = False,
    log: Callable[[str], None] = print,
    new_parameters: Iterable[str] = (),
) -> None:
    """Re-initialise and/or freeze in place (no-op with the defaults). ``new_parameters`` (from
    :func:`load_initial_weights`) stay trainable with the last layer."""
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
        new = set(new_parameters)
        for name, parameter in model.named_parameters():
            if name in new:
                parameter.requires_grad_(True)
        count = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log(f"fine-tuning the last layer only: {count} of {total} parameters trainable")
