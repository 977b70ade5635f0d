"""Plain perceptual loss, the "+VGG loss" baseline of the MAE-as-a-loss tables (not SPN).

    L = ‖y − ŷ‖ + λ · Σ_l w_l · ‖φ_l(ŷ) − φ_l(y)‖

``φ`` is the frozen VGG feature network SPN uses (:class:`resweep.losses.feature_nets.VGGFeatures`,
weights from a local file only, the same refusal when none is found); ``φ(y)`` is computed under
``no_grad``. Each layer's distance is the mean squared (L2) or mean absolute (L1) difference of
its feature maps.

Defaults: the perceptual loss the MAE-loss paper cites (Johnson et al. 2016), its feature
reconstruction loss for super-resolution: VGG-16 relu2_2 (post-ReLU), ImageNet normalisation,
``‖φ(ŷ) − φ(y)‖²₂ / (C·H·W)``, i.e. the mean squared difference. Johnson et al. train on that
term alone; added to a pixel loss, its weight λ is a choice each preset states (feature values
depend on the input convention, so λ = 1 on raw features is no neutral default).
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator

from resweep.losses.feature_nets import (
    VGGFeatures,
    check_layer_weights,
    check_vgg_layers,
)
from resweep.methods import Method, MethodConfig, MethodContext, register_method


class PerceptualConfig(MethodConfig):
    """Knobs of the perceptual loss (``methods.perceptual.*``)."""

    weight: float = Field(1.0, ge=0, description="λ (a preset states how it set it)")
    feature_net: Literal["vgg16", "vgg19"] = Field("vgg16", description="Johnson et al.: VGG-16")
    feature_layers: list[str] = Field(
        default_factory=lambda: ["relu2_2"], min_length=1, description="Johnson et al. (SR): relu2_2"
    )
    layer_weights: list[float] | None = Field(None, description="w_l per layer (default: all 1)")
    feature_before_relu: bool = Field(False, description="reluX_Y layers give the pre-activation")
    feature_normalize: Literal["imagenet", "none"] = "imagenet"
    feature_weights: Path | None = Field(
        None, description="VGG weights file (default: $RESWEEP_VGG_WEIGHTS, else the torch hub cache)"
    )
    allow_random_features: bool = Field(
        False, description="run with an untrained VGG when no weights file exists (not the paper)"
    )
    distance: Literal["same_as_pixel", "l1", "l2"] = Field(
        "l2", description="per-layer distance; Johnson et al.: mean squared (l2)"
    )

    @field_validator("feature_layers")
    @classmethod
    def _check_layers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        arch = info.data.get("feature_net", "vgg16")
        return check_vgg_layers(value, arch)

    @field_validator("layer_weights")
    @classmethod
    def _check_weights(cls, value: list[float] | None, info: ValidationInfo) -> list[float] | None:
        return check_layer_weights(value, info.data.get("feature_layers"))

    @property
    def weights_per_layer(self) -> list[float]:
        return list(self.layer_weights) if self.layer_weights is not None else [1.0] * len(self.feature_layers)


@register_method
class Perceptual(Method):
    """Adds ``λ·Σ_l w_l‖φ_l(ŷ) − φ_l(y)‖`` with a frozen VGG."""

    name: ClassVar[str] = "perceptual"
    config_class: ClassVar[type[MethodConfig]] = PerceptualConfig

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__(config, context)
        assert isinstance(config, PerceptualConfig)
        self.cfg = config
        self._notes: list[str] = []
        pixel = context.config.loss.pixel
        if config.distance == "same_as_pixel":
            self.distance_kind = "l2" if pixel == "l2" else "l1"
        else:
            self.distance_kind = config.distance
        self.active = config.weight > 0
        # not a registered submodule: the VGG is rebuilt from its file (or seed) when a run
        # resumes, so it stays out of checkpoints (tens of MB each)
        self._features: VGGFeatures | None = None
        if not self.active:
            return
        from resweep.methods.mae_loss import derive_seed

        features = VGGFeatures(
            arch=config.feature_net,
            layers=config.feature_layers,
            before_relu=config.feature_before_relu,
            normalize=config.feature_normalize,
            weights=config.feature_weights,
            allow_random=config.allow_random_features,
            seed=derive_seed(context.config.train.seed, "perceptual-features"),
        )
        object.__setattr__(self, "_features", features)  # bypass submodule registration
        if (note := features.note()) is not None:
            self._notes.append(f"perceptual: {note}")
            context.log(self._notes[-1])

    @property
    def features(self) -> VGGFeatures | None:
        return self._features

    def _apply(self, fn, recurse: bool = True):  # type: ignore[no-untyped-def]
        # .to(device) reaches the unregistered VGG too
        super()._apply(fn, recurse)
        if self._features is not None:
            self._features._apply(fn)
        return self

    def train(self, mode: bool = True) -> Perceptual:
        super().train(mode)
        if self.features is not None:
            self.features.eval()
        return self

    def perceptual_distance(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Unweighted by λ: ``Σ_l w_l ‖φ_l(ŷ) − φ_l(y)‖``."""
        assert self.features is not None
        pred = self.features(prediction)
        with torch.no_grad():
            ref = self.features(target)
        total = prediction.new_zeros((), dtype=torch.float32)
        for layer, w in zip(self.cfg.feature_layers, self.cfg.weights_per_layer, strict=True):
            diff = pred[layer].float() - ref[layer].float()
            total = total + w * (diff.abs().mean() if self.distance_kind == "l1" else (diff**2).mean())
        return total

    def loss_terms(
        self, prediction: torch.Tensor, batch: dict[str, torch.Tensor], iteration: int
    ) -> dict[str, torch.Tensor]:
        if not self.active:
            return {}
        return {"perceptual": self.cfg.weight * self.perceptual_distance(prediction, batch["gt"])}

    def notes(self) -> list[str]:
        return list(self._notes)
