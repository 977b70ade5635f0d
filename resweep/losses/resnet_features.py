"""A frozen ImageNet ResNet truncated after one stage: RCL's consistency encoder ``g_e``.

The paper uses an ImageNet ResNet-50 and does not say which layer ``φ`` reads; this module
returns the output of one residual stage (``layer1`` .. ``layer4``, default chosen by the method).
Weights come only from a local file (never downloaded), like ``VGGFeatures``: a torchvision
``resnet50-*.pth`` / ``resnet18-*.pth`` state dict or a timm one (the same key names), found via
the config path, ``$RESWEEP_RESNET_WEIGHTS`` or the torch hub cache. Only the keys of the kept
stages are needed, so a file holding just those loads too.
"""

from __future__ import annotations

from collections.abc import Callable
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

ResNetArch = Literal["resnet18", "resnet50"]
ResNetStage = Literal["layer1", "layer2", "layer3", "layer4"]
RESNET_WEIGHTS_ENV = "RESWEEP_RESNET_WEIGHTS"
# torchvision's file names (IMAGENET1K_V1 and, for resnet50, V2) as torch.hub caches them.
RESNET_TORCHVISION_FILES: dict[str, tuple[str, ...]] = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}
_STAGES = ("layer1", "layer2", "layer3", "layer4")


def resolve_resnet_weights(arch: str, weights: str | Path | None = None) -> Path:
    """The local weights file to use, or :class:`WeightsNotFoundError` saying what was tried."""
    hub = torch_hub_checkpoints()
    cache = [("torch hub cache", hub / name) for name in RESNET_TORCHVISION_FILES[arch]]
    return find_weights_file(
        candidate_files(weights, RESNET_WEIGHTS_ENV, cache),
        explicit=weights is not None,
        explicit_missing=lambda tried: (
            f"{arch} encoder weights file not found:\n{tried}\nGive the path of an existing "
            "torchvision or timm ResNet state dict."
        ),
        none_found=lambda tried: (
            f"no {arch} ImageNet weights found for the consistency encoder (nothing is downloaded). "
            f"Looked for:\n{tried}\nProvide one of: the path in the config "
            f"(methods.rcl.encoder_weights), ${RESNET_WEIGHTS_ENV}=/path/to/"
            f"{RESNET_TORCHVISION_FILES[arch][0]}, or that torchvision file copied into {hub}. "
            "To run anyway with random (untrained) features, which is not the paper's setting, "
            "allow it explicitly (methods.rcl.allow_random_features: true)."
        ),
    )


class ResNetFeatures(nn.Module):
    """Frozen ``stem + layer1..stage`` of a torchvision ResNet: ``forward(x in [0,1]) -> features``."""

    def __init__(
        self,
        arch: ResNetArch = "resnet50",
        stage: ResNetStage = "layer2",
        weights: str | Path | None = None,
        allow_random: bool = False,
        seed: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        import torchvision

        if arch not in RESNET_TORCHVISION_FILES:
            raise ResweepError(f"unknown ResNet '{arch}'; choose one of {', '.join(RESNET_TORCHVISION_FILES)}")
        if stage not in _STAGES:
            raise ResweepError(f"unknown ResNet stage '{stage}'; choose one of {', '.join(_STAGES)}")
        self.arch, self.stage = arch, stage
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            full = getattr(torchvision.models, arch)(weights=None)
        kept = ["conv1", "bn1", "relu", "maxpool", *_STAGES[: _STAGES.index(stage) + 1]]
        self.body = nn.Sequential(*(getattr(full, name) for name in kept))
        self._names = kept

        self.weights_path: Path | None = weights_or_random(
            lambda: resolve_resnet_weights(arch, weights), explicit=weights is not None, allow_random=allow_random
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
                f"consistency encoder {self.arch} uses RANDOM (untrained) weights: no ImageNet "
                "weights file was found and random features were allowed; not the paper's setting"
            )
        return None

    def _load(self, path: Path) -> None:
        state = load_state_mapping(path, "ResNet", ("state_dict", "model"))
        # body indices map back to torchvision names: body.0 = conv1, body.4 = layer1, ...
        wanted = {}
        for key, target in self.body.state_dict().items():
            index, _, rest = key.partition(".")
            wanted[f"{self._names[int(index)]}.{rest}"] = (key, target)
        missing = [name for name in wanted if name not in state]
        if missing:
            raise ResweepError(
                f"{path} lacks {len(missing)} ResNet weights needed up to {self.stage} "
                f"(e.g. {', '.join(missing[:3])}); is it a torchvision/timm {self.arch} file?"
            )
        new_state = {}
        for name, (key, target) in wanted.items():
            value = state[name]
            if not isinstance(value, torch.Tensor) or value.shape != target.shape:
                got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
                raise ResweepError(
                    f"{path}: {name} has shape {got}, {self.arch} expects {tuple(target.shape)}"
                )
            new_state[key] = value
        self.body.load_state_dict(new_state)

    def train(self, mode: bool = True) -> ResNetFeatures:
        # Frozen, batch-norm statistics included: always eval mode.
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean.to(x.dtype)) / self.std.to(x.dtype))

    def extra_repr(self) -> str:
        src = "random" if self.random_weights else str(self.weights_path)
        return f"arch={self.arch}, stage={self.stage}, weights={src}"
