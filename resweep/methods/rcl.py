"""RCL: residual contrastive learning from noisy images only (Dong et al.), METHODS.md section 4.

Pretrains a denoising backbone ``f`` (U-Net by default) without clean images. For a batch of
``N + 1`` noisy patches, two overlapping crops are cut from each and the network runs on each of
the ``2N + 2`` crops ``x`` (Algorithm 1, line 3), giving the residuals ``n̂(x) = x − f(x)``; the
anchor crop of image ``j`` should be closer, in the distance ``d`` between value
distributions, to the other crop of image ``j`` than to the second crops of the other ``N``
images (a cross-entropy over the ``(N+1)x(N+1)`` distance matrix, Eq. 3). A consistency term
``‖φ(g(x)) − φ(g(f(x)))‖²`` through a frozen ImageNet encoder keeps ``f(x)`` close to ``x`` in
content (Eq. 5):

    L = α · L_contrast + L_consistency        (α = 1e-3)

Choices the paper leaves open (documented knobs):

- The crops are cut from the noisy patch in ``transform_batch``, so the engine's forward pass
  runs the network on the ``2N + 2`` crops (anchors, then second crops), as Algorithm 1 does.
  Cutting both crops out of the residual of the whole patch instead would give the positive
  pair identical values in its overlap (and, for a network whose receptive field exceeds the
  crop, residuals that are not the crop's own), biasing positive distances down; it is not
  offered, as it is not cheaper either: 2·crop² pixels per image against patch² ≥ (1.5·crop)²
  at the default overlap (benchmarks/bench_rcl.py, batch 16, 64 px patches, 32 px crops: an
  RCL-EMD step was 1.35x a supervised step on the patch, it is 0.74x on the crops). Both crops have side ``crop_size``; the second is shifted diagonally by
  ``round(crop_size · (1 − crop_overlap))`` pixels, so ``crop_overlap`` is the fraction of the
  side shared along each axis (area overlap ``crop_overlap²``). Positions are random per image,
  from a generator seeded by (run seed, iteration, rank): reproducible and resumable.
- τ defaults to 0.1 (SimCLR's ImageNet value, which the paper says it follows). Distances of
  value distributions are small numbers (EMD of residuals ~ 0.01), so τ matters: sweep it.
- ``L_contrast`` is summed over the ``N + 1`` anchors (Algorithm 1); ``reduction: mean`` averages.
- ``L_consistency`` compares ``f(x)`` and ``x`` on the same ``2N + 2`` crops the network ran
  on (Eq. 5's ``x`` is the network's input). It is the *mean* squared difference of the
  encoder features (a sum would scale with the feature-map size); the encoder reads ``layer2``
  of ResNet-50 by default (the paper names no layer). The target branch ``φ(g(x))`` carries no gradient.
- Distances: see :mod:`resweep.losses.distribution_distances`.
- With DDP each worker contrasts the images of its own share of the batch (``N + 1`` =
  per-worker batch): negatives are not gathered across workers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import nn

from resweep.data.sampler import batch_keys
from resweep.errors import ConfigError
from resweep.losses.distribution_distances import (
    DistanceName,
    DistributionDistance,
    contrastive_cross_entropy,
)
from resweep.methods import Method, MethodConfig, MethodContext, register_method
from resweep.methods.diagnostics import Diagnostic, Phase
from resweep.methods.noisy_only import CLEAN_KEY, WithoutCleanTarget, with_clean_target
from resweep.methods.spn import derive_seed

#: batches of ``data.batch_size`` training images behind the Fig. 2 diagnostic (each gives
#: ``B·(B−1)`` gaps; the same images, noise and crops at the start and the end of training)
DIAGNOSTIC_BATCHES = 4
GAPS_DIAGNOSTIC = "rcl.distance_gaps"
TRUE_NOISE_GROUP = "true noise (lq − gt)"

EncoderName = Literal["resnet50", "resnet18", "vgg16", "vgg19"]
_DEFAULT_ENCODER_LAYER = {"resnet50": "layer2", "resnet18": "layer2", "vgg16": "relu3_3", "vgg19": "relu3_4"}


class RCLConfig(MethodConfig):
    """Knobs of residual contrastive pretraining (``methods.rcl.*``)."""

    alpha: float = Field(1e-3, ge=0, description="α, weight of the contrastive term (paper: 1e-3)")
    consistency_weight: float = Field(
        1.0, ge=0, description="weight of the consistency term (paper: 1; 0 = contrastive only)"
    )
    temperature: float = Field(0.1, gt=0, description="τ of the contrastive cross-entropy")
    distance: DistanceName = Field("emd", description="emd | bhattacharyya | mmd (paper default: emd)")
    reduction: Literal["sum", "mean"] = Field("sum", description="over the N+1 anchors (paper: sum)")
    crop_size: int = Field(32, ge=4, description="side of each residual crop (paper: >= 128)")
    crop_overlap: float = Field(
        0.5, gt=0, le=1, description="fraction of the crop side shared by the two crops, per axis"
    )
    bins: int = Field(64, ge=2, description="Bhattacharyya: soft-histogram bins")
    histogram_range: float | None = Field(
        None, gt=0, description="Bhattacharyya: bins cover [-r, r]; default the batch's max |residual|"
    )
    bandwidth: float | None = Field(
        None, gt=0, description="Bhattacharyya: Gaussian width of a value's vote; default one bin"
    )
    mmd_bandwidths: list[float] = Field(
        default_factory=lambda: [0.01, 0.03, 0.1], min_length=1, description="MMD: RBF σ values"
    )
    mmd_samples: int | None = Field(
        256, ge=2, description="MMD: random subsample of value positions, redrawn every step (None = all values)"
    )
    encoder: EncoderName = Field("resnet50", description="frozen ImageNet encoder g_e (paper: resnet50)")
    encoder_layer: str | None = Field(
        None, description="feature layer φ reads (default: layer2 for ResNets, relu3_3/relu3_4 for VGG)"
    )
    encoder_weights: Path | None = Field(
        None, description="weights file of the encoder (default: env variable, then torch hub cache)"
    )
    allow_random_features: bool = Field(
        False, description="use an untrained encoder when no weights file exists (not the paper)"
    )

    @model_validator(mode="after")
    def _check(self) -> RCLConfig:
        if any(b <= 0 for b in self.mmd_bandwidths):
            raise ValueError(f"mmd_bandwidths must all be > 0, got {self.mmd_bandwidths}")
        layer = self.resolved_encoder_layer
        if self.encoder.startswith("resnet"):
            if layer not in ("layer1", "layer2", "layer3", "layer4"):
                raise ValueError(f"encoder_layer '{layer}' is not a ResNet stage (layer1..layer4)")
        else:
            from resweep.losses.feature_nets import vgg_layer_names

            if layer not in vgg_layer_names(self.encoder):
                raise ValueError(f"encoder_layer '{layer}' is not a {self.encoder} layer")
        return self

    @property
    def resolved_encoder_layer(self) -> str:
        return self.encoder_layer or _DEFAULT_ENCODER_LAYER[self.encoder]

    @property
    def crop_shift(self) -> int:
        """Pixels between the two crops' corners along each axis."""
        return round(self.crop_size * (1.0 - self.crop_overlap))

    def distance_function(self, seed: int) -> DistributionDistance:
        return DistributionDistance(
            name=self.distance,
            bins=self.bins,
            value_range=self.histogram_range,
            bandwidth=self.bandwidth,
            mmd_bandwidths=tuple(self.mmd_bandwidths),
            mmd_samples=self.mmd_samples,
            seed=seed,
        )


class FrozenEncoder(nn.Module):
    """``g_e`` then ``φ``: one feature map from a frozen ResNet or VGG."""

    def __init__(self, cfg: RCLConfig, seed: int) -> None:
        super().__init__()
        layer = cfg.resolved_encoder_layer
        self.layer = layer
        if cfg.encoder.startswith("resnet"):
            from resweep.losses.resnet_features import ResNetFeatures

            self.net: nn.Module = ResNetFeatures(
                arch=cfg.encoder,  # type: ignore[arg-type]
                stage=layer,  # type: ignore[arg-type]
                weights=cfg.encoder_weights,
                allow_random=cfg.allow_random_features,
                seed=seed,
            )
        else:
            from resweep.losses.feature_nets import VGGFeatures

            self.net = VGGFeatures(
                arch=cfg.encoder,  # type: ignore[arg-type]
                layers=[layer],
                weights=cfg.encoder_weights,
                allow_random=cfg.allow_random_features,
                seed=seed,
            )

    def note(self) -> str | None:
        return self.net.note()  # type: ignore[operator]

    def train(self, mode: bool = True) -> FrozenEncoder:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out[self.layer] if isinstance(out, dict) else out


def two_overlapping_crops(
    tensor: torch.Tensor, crop_size: int, shift: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of ``(B, C, H, W)``: a crop at a random corner and one shifted by ``shift``
    pixels along both axes (``(B, C, crop, crop)`` each); positions from ``generator``."""
    b, _, h, w = tensor.shape
    span = crop_size + shift
    if h < span or w < span:
        raise ValueError(f"patch {h}x{w} is smaller than two crops of {crop_size} shifted by {shift}")
    tops = torch.randint(0, h - span + 1, (b,), generator=generator).tolist()
    lefts = torch.randint(0, w - span + 1, (b,), generator=generator).tolist()
    first = [tensor[i, :, t : t + crop_size, s : s + crop_size] for i, (t, s) in enumerate(zip(tops, lefts, strict=True))]
    second = [
        tensor[i, :, t + shift : t + shift + crop_size, s + shift : s + shift + crop_size]
        for i, (t, s) in enumerate(zip(tops, lefts, strict=True))
    ]
    return torch.stack(first), torch.stack(second)


@register_method
class RCL(Method):
    """Residual contrastive loss + consistency loss; replaces the supervised pixel loss."""

    name: ClassVar[str] = "rcl"
    config_class: ClassVar[type[MethodConfig]] = RCLConfig
    replaces_pixel_loss: ClassVar[bool] = True

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__(config, context)
        assert isinstance(config, RCLConfig)
        self.cfg = config
        exp = context.config
        if exp.scale != 1:
            raise ConfigError(
                f"RCL pretrains a denoising backbone (residual x − f(x) needs the output at input "
                f"size): task.scale must be 1, got {exp.scale} (task '{exp.task.kind}')",
                field="task.scale",
            )
        needed = config.crop_size + config.crop_shift
        if exp.data.patch_size < needed:
            raise ConfigError(
                f"two crops of {config.crop_size} px overlapping by {config.crop_overlap:g} span "
                f"{needed} px, more than data.patch_size={exp.data.patch_size}: raise the patch "
                "size or lower methods.rcl.crop_size / raise methods.rcl.crop_overlap",
                field="methods.rcl.crop_size",
            )
        if exp.data.batch_size // context.world.world_size < 2:
            raise ConfigError(
                "RCL needs at least 2 images per worker (one positive and >= 1 negative)",
                field="data.batch_size",
            )
        self._seed = exp.train.seed
        self._rank = context.world.rank
        self._batch_size = exp.data.batch_size
        self.distance = config.distance_function(derive_seed(self._seed, "rcl-mmd-positions"))
        self._notes: list[str] = []
        self.encoder: FrozenEncoder | None = None
        if config.consistency_weight > 0:
            self.encoder = FrozenEncoder(config, derive_seed(self._seed, "rcl-encoder"))
            if (note := self.encoder.note()) is not None:
                self._notes.append(f"rcl: {note}")
                context.log(self._notes[-1])
        else:
            self._notes.append("rcl: consistency_weight 0, contrastive term only (not the paper)")
        if config.crop_size < 128:
            self._notes.append(f"rcl: crops of {config.crop_size} px (paper: at least 128)")
        self._sums: dict[str, float] = {}
        self._count = 0

    def wrap_train_dataset(self, dataset: Any) -> Any:
        # No clean images: the training samples lose their ground truth before the engine sees them.
        return WithoutCleanTarget(dataset)

    def train(self, mode: bool = True) -> RCL:
        super().train(mode)
        if self.encoder is not None:
            self.encoder.eval()
        return self

    def crop_pairs(self, noisy: torch.Tensor, iteration: int) -> torch.Tensor:
        """``(2B, C, crop, crop)``: the anchor crop of every image, then its second crop, at
        positions drawn from (run seed, iteration, rank): reproducible and resumable."""
        generator = torch.Generator().manual_seed(derive_seed(self._seed, "rcl-crops", iteration, self._rank))
        anchors, seconds = two_overlapping_crops(noisy, self.cfg.crop_size, self.cfg.crop_shift, generator)
        return torch.cat([anchors, seconds])

    def transform_batch(self, batch: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        # Algorithm 1, line 3: the network runs on each of the 2N+2 crops, not once on the patch.
        return {**batch, "lq": self.crop_pairs(batch["lq"], iteration)}

    def distance_matrix(self, residual: torch.Tensor, iteration: int) -> torch.Tensor:
        """``D[j, i] = d(anchor crop of image j, second crop of image i)`` from the ``(2B, ...)``
        residuals of :meth:`crop_pairs` (MMD's value positions drawn for this iteration)."""
        anchors, seconds = residual.chunk(2)
        seed = derive_seed(self._seed, "rcl-mmd-positions", iteration, self._rank)
        return self.distance(anchors, seconds, sample_seed=seed)

    def loss_terms(
        self, prediction: torch.Tensor, batch: dict[str, torch.Tensor], iteration: int
    ) -> dict[str, torch.Tensor]:
        noisy = batch["lq"].float()  # the crops transform_batch cut
        prediction = prediction.float()
        crop = self.cfg.crop_size
        if noisy.shape != prediction.shape or noisy.shape[0] % 2 or tuple(noisy.shape[-2:]) != (crop, crop):
            raise ValueError(
                f"rcl: expected the network's output on the 2B crops of {crop} px that transform_batch "
                f"cut (got input {tuple(noisy.shape)}, output {tuple(prediction.shape)})"
            )
        residual = noisy - prediction
        matrix = self.distance_matrix(residual, iteration)
        contrast = contrastive_cross_entropy(matrix, self.cfg.temperature, self.cfg.reduction)
        terms = {"rcl_contrast": self.cfg.alpha * contrast}
        if self.encoder is not None:
            with torch.no_grad():
                target = self.encoder(noisy)
            consistency = F.mse_loss(self.encoder(prediction).float(), target.float())
            terms["rcl_consistency"] = self.cfg.consistency_weight * consistency
        with torch.no_grad():
            d = matrix.detach()
            n = d.shape[0]
            positive = d.diagonal().mean()
            negative = (d.sum() - d.diagonal().sum()) / (n * (n - 1))
            accuracy = (d.argmin(dim=1) == torch.arange(n, device=d.device)).float().mean()
        for key, value in (("positive_distance", positive), ("negative_distance", negative),
                           ("anchor_accuracy", accuracy), ("contrast", contrast.detach())):
            self._sums[key] = self._sums.get(key, 0.0) + float(value)
        self._count += 1
        return terms

    def metrics(self, iteration: int) -> dict[str, float]:
        """Means since the last report: distances to positives / negatives, how often the
        positive is the nearest crop, and the unweighted contrastive loss."""
        if not self._count:
            return {}
        out = {k: v / self._count for k, v in self._sums.items()}
        self._sums, self._count = {}, 0
        return out

    def notes(self) -> list[str]:
        return list(self._notes)

    def diagnostics(self, model: nn.Module, dataset: Any, phase: Phase) -> list[Diagnostic]:
        """The paper's Fig. 2: ``d(anchor, negative) − d(anchor, positive)`` of the residuals of
        ``model`` on ``DIAGNOSTIC_BATCHES`` fixed batches of the (noisy) training data, with
        this run's distance and crops (the network run on each crop, as in training); the same
        images, noise and crop positions at both phases, so the start and end groups differ
        only by the weights. The paper's reference curve, the same gaps of the true noise
        ``lq − gt`` on the same crops, is added where the data has clean images (a measurement,
        not training: the clean images never reach a loss)."""
        keys_seed = derive_seed(self._seed, "rcl-diagnostic-images")
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        gaps: list[torch.Tensor] = []
        true_gaps: list[torch.Tensor] | None = []
        try:
            for i in range(DIAGNOSTIC_BATCHES):
                keys = batch_keys(keys_seed, i, 0, self._batch_size, 1, len(dataset))
                samples = [with_clean_target(dataset, k) for k in keys]
                noisy = torch.stack([s["lq"] for s in samples]).float().to(device)
                crops_seed = derive_seed(self._seed, "rcl-diagnostic-crops", i)
                sample_seed = derive_seed(self._seed, "rcl-diagnostic-mmd", i)
                gaps.append(distance_gaps(model, noisy, self.distance, self.cfg.crop_size, self.cfg.crop_shift,
                                          torch.Generator().manual_seed(crops_seed), sample_seed=sample_seed))
                if true_gaps is not None and all(CLEAN_KEY in s for s in samples):
                    noise = noisy - torch.stack([s[CLEAN_KEY] for s in samples]).float().to(device)
                    true_gaps.append(noise_gaps(noise, self.distance, self.cfg.crop_size, self.cfg.crop_shift,
                                                torch.Generator().manual_seed(crops_seed), sample_seed=sample_seed))
                else:
                    true_gaps = None
        finally:
            model.train(was_training)
        name = {"emd": "EMD", "bhattacharyya": "BD", "mmd": "MMD"}[self.cfg.distance]
        label = "before training (initial weights)" if phase == "start" else "after training"
        samples = {label: torch.cat(gaps).double().cpu().tolist()}
        reference_group = None
        if true_gaps:
            reference_group = TRUE_NOISE_GROUP
            samples[reference_group] = torch.cat(true_gaps).double().cpu().tolist()
        return [Diagnostic(
            name=GAPS_DIAGNOSTIC,
            title=f"RCL Fig. 2: {name}(negative) − {name}(positive) of the residuals",
            x_title=f"{name}(anchor, negative) − {name}(anchor, positive)",
            samples=samples,
            note=(f"{DIAGNOSTIC_BATCHES} fixed batches of {self._batch_size} noisy training patches, crops of "
                  f"{self.cfg.crop_size} px shifted by {self.cfg.crop_shift}, the network run on each crop; every "
                  "anchor with each of its negatives. Positive: the residuals tell the images apart (the paper: "
                  "the mass moves to positive values with training, towards the curve of the true noise "
                  + ("lq − gt, drawn as a line)." if true_gaps else "lq − gt, absent here: the data has no clean "
                     "images).")),
            reference=0.0,
            reference_group=reference_group,
        )]

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"distance={c.distance}, alpha={c.alpha:g}, tau={c.temperature:g}, crop={c.crop_size}, "
            f"overlap={c.crop_overlap:g}, encoder={c.encoder}:{c.resolved_encoder_layer}"
        )


def _gaps(anchors: torch.Tensor, seconds: torch.Tensor, distance: DistributionDistance,
          sample_seed: int | None) -> torch.Tensor:
    d = distance(anchors, seconds, sample_seed=sample_seed)
    n = d.shape[0]
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=d.device)
    return (d - d.diagonal().unsqueeze(1))[off_diagonal]


@torch.no_grad()
def distance_gaps(
    model: nn.Module,
    noisy: torch.Tensor,
    distance: DistributionDistance,
    crop_size: int,
    shift: int,
    generator: torch.Generator,
    *,
    sample_seed: int | None = None,
) -> torch.Tensor:
    """The paper's Fig. 2 samples: ``d(anchor, negative) − d(anchor, positive)`` for every anchor
    and each of its ``N`` negatives (``(N+1)·N`` values) on one batch of noisy images, the
    residual of each crop from ``model`` run on that crop. Positive values mean the residuals
    tell images apart; compare a random and a pretrained ``model``."""
    anchors, seconds = two_overlapping_crops(noisy, crop_size, shift, generator)
    crops = torch.cat([anchors, seconds])
    residual = crops - model(crops)
    return _gaps(*residual.chunk(2), distance, sample_seed)


@torch.no_grad()
def noise_gaps(
    noise: torch.Tensor,
    distance: DistributionDistance,
    crop_size: int,
    shift: int,
    generator: torch.Generator,
    *,
    sample_seed: int | None = None,
) -> torch.Tensor:
    """:func:`distance_gaps` of known noise ``lq − gt`` (the paper's reference curve): the crops
    at the positions ``generator`` draws, as there."""
    anchors, seconds = two_overlapping_crops(noise, crop_size, shift, generator)
    return _gaps(anchors, seconds, distance, sample_seed)
