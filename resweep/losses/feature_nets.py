"""Frozen feature networks for perceptual-style losses (SPN's negatives, the "+VGG loss" baseline).

``VGGFeatures`` is the convolutional part of an ImageNet VGG16/VGG19, truncated after the deepest
requested layer, returning ``{layer name: feature map}``. Its weights come only from a local file
(never downloaded): a torchvision file such as ``vgg16-397923af.pth`` or a timm ``vgg16`` state
dict (``.pth``/``.pt``/``.bin`` or ``.safetensors``). Both layouts name the convolutions
``features.<index>.{weight,bias}`` with the same indices; they differ only in the classifier,
which is ignored here.

Layer names follow the usual VGG convention: ``convB_L`` (output of the L-th convolution of block
B), ``reluB_L`` (after its ReLU) and ``poolB``: each name is the output of that torchvision
module, as the MCIR/SPN authors' extractor stores it (so ``relu1_2`` is post-activation).
``before_relu=True`` makes a ``reluB_L`` request return the pre-activation (the ``convB_L``
output) instead; it is a knob, not the authors' setting.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from resweep.errors import ResweepError
from resweep.losses.weights_files import (
    candidate_files,
    find_weights_file,
    load_state_mapping,
    torch_hub_checkpoints,
    weights_or_random,
)
from resweep.models.common import IMAGENET_MEAN, IMAGENET_STD

VGGArch = Literal["vgg16", "vgg19"]
Normalize = Literal["imagenet", "none"]

WEIGHTS_ENV = "RESWEEP_VGG_WEIGHTS"
# torchvision's file names: what torch.hub would have cached after a download elsewhere.
TORCHVISION_FILES: dict[str, str] = {
    "vgg16": "vgg16-397923af.pth",
    "vgg19": "vgg19-dcbb9e9d.pth",
}
_CONFIGS: dict[str, tuple[int, ...]] = {"vgg16": (2, 2, 3, 3, 3), "vgg19": (2, 2, 4, 4, 4)}
_WIDTHS = (64, 128, 256, 512, 512)

_FEATURE_KEY = re.compile(r"(?:^|\.)features\.(\d+)\.(weight|bias)$")


def vgg_layer_table(arch: str) -> list[tuple[str, str]]:
    """``[(kind, name), ...]`` in ``features`` index order; kind is conv, relu or pool."""
    if arch not in _CONFIGS:
        raise ResweepError(f"unknown VGG architecture '{arch}'; choose one of {', '.join(_CONFIGS)}")
    table: list[tuple[str, str]] = []
    for block, n_convs in enumerate(_CONFIGS[arch], start=1):
        for i in range(1, n_convs + 1):
            table.append(("conv", f"conv{block}_{i}"))
            table.append(("relu", f"relu{block}_{i}"))
        table.append(("pool", f"pool{block}"))
    return table


def vgg_layer_names(arch: str) -> list[str]:
    return [name for _, name in vgg_layer_table(arch)]


def check_vgg_layers(layers: list[str], arch: str) -> list[str]:
    """Config validation shared by the methods that tap VGG layers (SPN, perceptual)."""
    known = vgg_layer_names(arch)
    bad = [layer for layer in layers if layer not in known]
    if bad:
        raise ValueError(f"unknown {arch} layer(s) {bad}; known: {', '.join(known)}")
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers repeat: {layers}")
    return layers


def check_layer_weights(weights: list[float] | None, layers: list[str] | None) -> list[float] | None:
    """One weight per tapped layer (None: every layer weighs 1)."""
    if weights is not None and layers is not None and len(weights) != len(layers):
        raise ValueError(
            f"layer_weights has {len(weights)} values but feature_layers has {len(layers)} "
            f"({layers}); give one weight per layer"
        )
    return weights


def _feature_index(arch: str, layer: str, before_relu: bool) -> int:
    """Index in ``features`` whose output is the requested layer."""
    names = vgg_layer_names(arch)
    if layer not in names:
        raise ResweepError(
            f"unknown {arch} layer '{layer}'; known: {', '.join(names)}"
        )
    index = names.index(layer)
    if before_relu and layer.startswith("relu"):
        index -= 1  # the convolution just before this ReLU
    return index


def candidate_weight_files(arch: str, weights: str | Path | None = None) -> list[tuple[str, Path]]:
    """Where the weights are looked for, in order: ``[(how it was named, path), ...]``."""
    hub = torch_hub_checkpoints() / TORCHVISION_FILES[arch]
    return candidate_files(weights, WEIGHTS_ENV, [("torch hub cache", hub)])


def resolve_weights(arch: str, weights: str | Path | None = None) -> Path:
    """The local weights file to use, or :class:`WeightsNotFoundError` saying what was tried."""
    return find_weights_file(
        candidate_weight_files(arch, weights),
        explicit=weights is not None,
        explicit_missing=lambda tried: (
            f"{arch} feature-network weights file not found:\n{tried}\n"
            "Give the path of an existing torchvision or timm VGG state dict."
        ),
        none_found=lambda tried: (
            f"no {arch} ImageNet weights found for the feature network (nothing is downloaded). "
            f"Looked for:\n{tried}\n"
            f"Provide one of: the path in the config (e.g. methods.spn.feature_weights), the "
            f"environment variable {WEIGHTS_ENV}=/path/to/{TORCHVISION_FILES[arch]}, or the file "
            f"{TORCHVISION_FILES[arch]} from torchvision ({arch} IMAGENET1K_V1) copied into "
            f"{torch_hub_checkpoints()}. A timm '{arch}' state dict works too. "
            "To run anyway with random (untrained) features, which is not the paper's setting, "
            "allow it explicitly (allow_random_features: true)."
        ),
    )


def load_vgg_feature_state(path: str | Path) -> dict[int, dict[str, torch.Tensor]]:
    """``{features index: {"weight": ..., "bias": ...}}`` from a torchvision or timm file."""
    path = Path(path)
    state = load_state_mapping(path, "VGG", ("state_dict", "model", "params", "net"))
    convs: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        match = _FEATURE_KEY.search(str(key))
        if match and isinstance(value, torch.Tensor):
            convs.setdefault(int(match.group(1)), {})[match.group(2)] = value
    if not convs:
        raise ResweepError(
            f"{path} has no VGG convolution weights: expected keys like 'features.0.weight' "
            "(torchvision or timm VGG layout)"
        )
    return convs


class VGGFeatures(nn.Module):
    """Frozen VGG feature extractor: ``forward(x in [0, 1]) -> {layer: features}``.

    Only the layers up to the deepest requested one are built. The module stays in eval mode and
    its parameters never require gradients; gradients still flow to the input.
    """

    def __init__(
        self,
        arch: VGGArch = "vgg16",
        layers: Sequence[str] = ("relu1_2", "relu2_2", "relu3_3"),
        before_relu: bool = False,
        normalize: Normalize = "imagenet",
        weights: str | Path | None = None,
        allow_random: bool = False,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        if not layers:
            raise ResweepError("VGGFeatures needs at least one layer")
        if normalize not in ("imagenet", "none"):
            raise ResweepError(f"normalize must be 'imagenet' or 'none', got {normalize!r}")
        self.arch = arch
        self.layers = tuple(layers)
        self.before_relu = before_relu
        self.normalize = normalize
        self._taps = {layer: _feature_index(arch, layer, before_relu) for layer in self.layers}
        last = max(self._taps.values())

        # Random init is seeded on its own so every DDP rank builds the same network and the
        # caller's RNG stream is left untouched.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            modules: list[nn.Module] = []
            in_ch = 3
            for index, (kind, name) in enumerate(vgg_layer_table(arch)):
                if index > last:
                    break
                if kind == "conv":
                    block = int(name[4]) - 1
                    modules.append(nn.Conv2d(in_ch, _WIDTHS[block], 3, padding=1))
                    in_ch = _WIDTHS[block]
                elif kind == "relu":
                    # Not in place: a tapped pre-activation must survive the next layer.
                    modules.append(nn.ReLU(inplace=False))
                else:
                    modules.append(nn.MaxPool2d(2, 2))
            self.features = nn.Sequential(*modules)

        self.weights_path: Path | None = weights_or_random(
            lambda: resolve_weights(arch, weights), explicit=weights is not None, allow_random=allow_random
        )
        if self.weights_path is not None:
            self._load(self.weights_path)
        elif log is not None:
            log(self.note() or "")

        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @property
    def random_weights(self) -> bool:
        return self.weights_path is None

    def note(self) -> str | None:
        if self.random_weights:
            return (
                f"feature network {self.arch} uses RANDOM (untrained) weights: no ImageNet weights "
                f"file was found and random features were allowed; this is not the paper's setting"
            )
        return None

    def _load(self, path: Path) -> None:
        convs = load_vgg_feature_state(path)
        for index, module in enumerate(self.features):
            if not isinstance(module, nn.Conv2d):
                continue
            entry = convs.get(index)
            if entry is None or "weight" not in entry or "bias" not in entry:
                raise ResweepError(
                    f"{path} lacks features.{index}.weight/bias needed for {self.arch} up to "
                    f"'{max(self._taps, key=self._taps.__getitem__)}'"
                )
            if entry["weight"].shape != module.weight.shape:
                raise ResweepError(
                    f"{path}: features.{index}.weight has shape {tuple(entry['weight'].shape)}, "
                    f"{self.arch} expects {tuple(module.weight.shape)} (is it a {self.arch} file?)"
                )
            with torch.no_grad():
                module.weight.copy_(entry["weight"])
                module.bias.copy_(entry["bias"])

    def train(self, mode: bool = True) -> VGGFeatures:
        # Frozen: always in eval mode whatever the parent module does.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.normalize == "imagenet":
            x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        wanted: dict[int, list[str]] = {}
        for layer, index in self._taps.items():
            wanted.setdefault(index, []).append(layer)
        out: dict[str, torch.Tensor] = {}
        for index, module in enumerate(self.features):
            x = module(x)
            for layer in wanted.get(index, ()):
                out[layer] = x
        return out

    def extra_repr(self) -> str:
        src = "random" if self.random_weights else str(self.weights_path)
        return (
            f"arch={self.arch}, layers={list(self.layers)}, before_relu={self.before_relu}, "
            f"normalize={self.normalize}, weights={src}"
        )
