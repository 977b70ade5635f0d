"""MCIR / SPN: "learning from history" (Wu et al., AAAI 2024).

K negative models ``f_θ'k`` (copies of the trained architecture) produce negatives from the
training input; a frozen VGG maps the prediction and the negatives to features, and the loss
pushes the prediction away from them:

    L = L_rec(ŷ, y) − λ · (1/K) · Σ_k Σ_l w_l · mean|φ_l(ŷ) − φ_l(f_θ'k(x))|

``mean`` is the L1 mean over all elements of a layer's feature map (``torch.nn.L1Loss``), as in
the authors' code; λ = 1e-4 is calibrated for that normalisation (a sum would be ~1e6 larger).
``φ_l`` is the output of the named torchvision module (``relu1_2`` after its ReLU), as the
authors' extractor stores it. Late hard negatives differ from ŷ by about one bf16 step, so
under ``train.amp`` the whole path stays fp32: the engine runs the model's forward in fp32 for
SPN (``needs_fp32_forward``) and, as for every method, the loss terms (the negatives' forward
and ``φ``) with autocast off; ``loss_precision: bf16`` opts both into bf16 autocast.

Negative kinds: ``ema`` (default; initialised as ``s·θ_random + (1−s)·θ`` and refreshed every
``T_k`` steps by ``θ'k ← β_k·θ'k + (1−β_k)·θ``), ``random_fixed`` (a freshly initialised model,
never updated), ``pretrained_fixed`` (weights from a file, never updated) and ``none`` (no
negative term at all). Negatives and the feature network are submodules, so they move to the
device and land in checkpoints: a resumed run continues with exactly the same negatives.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import ClassVar, Literal

import torch
from pydantic import Field, ValidationInfo, field_validator, model_validator
from torch import nn

from resweep.errors import ResweepError
from resweep.losses.feature_nets import (
    VGGFeatures,
    check_layer_weights,
    check_vgg_layers,
)
from resweep.methods import Method, MethodConfig, MethodContext, register_method

NegativeKind = Literal["none", "ema", "random_fixed", "pretrained_fixed"]


class SPNConfig(MethodConfig):
    """Knobs of the self-prior guided negative loss (``methods.spn.*``)."""

    weight: float = Field(
        1e-4, ge=0, description="λ, the weight of the negative term (paper: 1e-4; 0 = off)"
    )
    negative_kind: NegativeKind = Field(
        "ema", description="none | ema | random_fixed | pretrained_fixed (paper Tab. 6)"
    )
    negative_step_set: list[int] = Field(
        default_factory=lambda: [100, 500, 1000, 2000],
        min_length=1,
        description="update period T_k of each negative model; K = its length",
    )
    ema_beta: float | list[float] = Field(
        0.1, description="β of the EMA update: one shared value or one per negative"
    )
    neg_start: float = Field(
        0.05, ge=0, le=1, description="s: negatives start as s·random + (1−s)·current weights"
    )
    pretrained_negative: Path | None = Field(
        None,
        validate_default=True,
        description="weights of the fixed negative (negative_kind 'pretrained_fixed')",
    )
    feature_net: Literal["vgg16", "vgg19"] = "vgg16"
    feature_layers: list[str] = Field(
        default_factory=lambda: ["relu1_2", "relu2_2", "relu3_3"], min_length=1
    )
    layer_weights: list[float] = Field(
        default_factory=lambda: [0.2, 0.3, 0.5], description="w_l, one per feature layer"
    )
    feature_before_relu: bool = Field(
        False,
        description="reluX_Y layers give the pre-activation (conv output) instead of the ReLU "
        "output; the authors' code takes the ReLU output (false)",
    )
    feature_normalize: Literal["imagenet", "none"] = "imagenet"
    feature_weights: Path | None = Field(
        None, description="VGG weights file (default: $RESWEEP_VGG_WEIGHTS, else the torch hub cache)"
    )
    allow_random_features: bool = Field(
        False, description="run with an untrained VGG when no weights file exists (not the paper)"
    )
    distance: Literal["l1"] = "l1"
    # Measured on CPU (benchmarks/bench_spn.py: K=4, batch 4, 96x96 outputs): the negatives' VGG
    # pass alone took 784 ms CPU time per negative vs 868 ms batched (smaller working set);
    # whole steps differed by less than the run-to-run noise. On GPU batching may win for
    # small batches: measure with --device cuda and set "batched" if so.
    negative_features: Literal["per_negative", "batched"] = Field(
        "per_negative",
        description="one no-grad VGG pass per negative, or one pass over all K concatenated",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_feature_precision(cls, data: object) -> object:
        # feature_precision became every method's loss_precision; configs stored before still load
        if isinstance(data, dict) and "feature_precision" in data:
            data = dict(data)
            old = data.pop("feature_precision")
            if data.setdefault("loss_precision", old) != old:
                raise ValueError(
                    f"feature_precision ({old!r}) is the old name of loss_precision "
                    f"({data['loss_precision']!r}); give only loss_precision"
                )
        return data

    @field_validator("negative_step_set")
    @classmethod
    def _positive_steps(cls, value: list[int]) -> list[int]:
        bad = [t for t in value if t < 1]
        if bad:
            raise ValueError(f"every step must be >= 1, got {bad}")
        return value

    @field_validator("ema_beta")
    @classmethod
    def _check_beta(cls, value: float | list[float], info: ValidationInfo) -> float | list[float]:
        values = value if isinstance(value, list) else [value]
        bad = [b for b in values if not 0.0 <= b <= 1.0]
        if bad:
            raise ValueError(f"β must be in [0, 1], got {bad}")
        steps = info.data.get("negative_step_set")
        if isinstance(value, list) and steps is not None and len(value) != len(steps):
            raise ValueError(
                f"ema_beta has {len(value)} values but negative_step_set has {len(steps)} "
                "negatives; give one β per negative or a single shared number"
            )
        return value

    @field_validator("pretrained_negative")
    @classmethod
    def _check_pretrained(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if info.data.get("negative_kind") == "pretrained_fixed" and value is None:
            raise ValueError("negative_kind 'pretrained_fixed' needs a weights file here")
        return value

    @field_validator("feature_layers")
    @classmethod
    def _check_layers(cls, value: list[str], info: ValidationInfo) -> list[str]:
        arch = info.data.get("feature_net", "vgg16")
        return check_vgg_layers(value, arch)

    @field_validator("layer_weights")
    @classmethod
    def _check_layer_weights(cls, value: list[float], info: ValidationInfo) -> list[float]:
        check_layer_weights(value, info.data.get("feature_layers"))
        return value

    @property
    def num_negatives(self) -> int:
        return len(self.negative_step_set)

    @property
    def betas(self) -> list[float]:
        """β per negative."""
        if isinstance(self.ema_beta, list):
            return list(self.ema_beta)
        return [float(self.ema_beta)] * self.num_negatives


def derive_seed(seed: int, *tags: object) -> int:
    """A stable 63-bit seed from the run seed and tags (same on every rank and every run)."""
    text = ":".join(str(t) for t in (seed, *tags))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & (2**63 - 1)


@register_method
class SPN(Method):
    """Self-prior guided negative loss with K negative models (EMA of the model by default)."""

    name: ClassVar[str] = "spn"
    config_class: ClassVar[type[MethodConfig]] = SPNConfig

    def __init__(self, config: MethodConfig, context: MethodContext):
        super().__init__(config, context)
        assert isinstance(config, SPNConfig)
        self.cfg = config
        exp = context.config
        self._model_name = exp.model.name
        self._model_kwargs = dict(exp.model.kwargs)
        self._scale = exp.scale
        self._seed = exp.train.seed
        self._notes: list[str] = []
        self._channels_last = exp.train.channels_last and context.world.device.type == "cuda"
        self._formatted = False
        self._dist_sum: torch.Tensor | None = None
        self._dist_count = 0
        self.negatives = nn.ModuleList()
        self.features: VGGFeatures | None = None

        self.active = config.negative_kind != "none" and config.weight > 0
        if not self.active:
            if config.negative_kind == "none":
                why = f"negative_kind 'none': weight λ={config.weight:g} is ignored"
            else:
                why = "weight λ is 0"
            self._notes.append(f"spn: {why}; no negative term and no negative models")
            context.log(self._notes[-1])
            return

        self.features = VGGFeatures(
            arch=config.feature_net,
            layers=config.feature_layers,
            before_relu=config.feature_before_relu,
            normalize=config.feature_normalize,
            weights=config.feature_weights,
            allow_random=config.allow_random_features,
            seed=derive_seed(self._seed, "spn-features"),
        )
        if (note := self.features.note()) is not None:
            self._notes.append(f"spn: {note}")
            context.log(self._notes[-1])

        current = {
            **{n: p.detach().to("cpu") for n, p in context.model.named_parameters()},
            **{n: b.detach().to("cpu") for n, b in context.model.named_buffers()},
        }
        pretrained = None
        if config.negative_kind == "pretrained_fixed":
            from resweep.models.weights import load_model_weights

            assert config.pretrained_negative is not None
            try:
                pretrained = load_model_weights(config.pretrained_negative)
            except ResweepError as exc:
                raise ResweepError(f"methods.spn.pretrained_negative: {exc}") from exc
        for k in range(config.num_negatives):
            negative = self.random_negative(k)
            with torch.no_grad():
                if config.negative_kind == "ema":
                    s = config.neg_start
                    for name, p in negative.named_parameters():
                        p.mul_(s).add_(current[name].to(p.dtype), alpha=1.0 - s)
                    for name, b in negative.named_buffers():
                        b.copy_(current[name])
                elif pretrained is not None:
                    try:
                        negative.load_state_dict(pretrained)
                    except RuntimeError as exc:
                        raise ResweepError(
                            f"methods.spn.pretrained_negative: {config.pretrained_negative} does "
                            f"not fit model '{self._model_name}': {exc}"
                        ) from exc
            negative.requires_grad_(False)
            negative.eval()
            self.negatives.append(negative)
        if config.negative_kind == "random_fixed":
            self._notes.append("spn: negatives are randomly initialised and fixed (Tab. 6 ablation)")
        elif config.negative_kind == "pretrained_fixed":
            self._notes.append(
                f"spn: negatives are fixed pretrained weights from {config.pretrained_negative} "
                "(Tab. 6 ablation)"
            )

    # ------------------------------------------------------------------ negatives
    def random_negative(self, k: int) -> nn.Module:
        """The k-th negative's random initialisation θ'k_random (deterministic in the run seed).

        The architecture's own initialiser runs under a forked RNG seeded from the config seed,
        so every DDP rank draws the same weights and the global RNG stream is left untouched.
        """
        from resweep.models import create_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(self._seed, "spn-negative", k))
            return create_model(self._model_name, scale=self._scale, **self._model_kwargs)

    def train(self, mode: bool = True) -> SPN:
        # Negatives and features are frozen: eval mode whatever the trainer asks.
        super().train(mode)
        self.negatives.eval()
        if self.features is not None:
            self.features.eval()
        return self

    @torch.no_grad()
    def after_step(self, model: nn.Module, iteration: int) -> None:
        if not self.active or self.cfg.negative_kind != "ema":
            return
        for negative, period, beta in zip(
            self.negatives, self.cfg.negative_step_set, self.cfg.betas, strict=True
        ):
            if iteration % period:
                continue
            src = dict(model.named_parameters())
            dst = [p for _, p in negative.named_parameters()]
            srcs = [src[n].detach() for n, _ in negative.named_parameters()]
            # θ'k ← β·θ'k + (1−β)·θ, written literally (not lerp) to match the paper's formula.
            torch._foreach_mul_(dst, beta)
            torch._foreach_add_(dst, srcs, alpha=1.0 - beta)
            buffers = dict(model.named_buffers())
            for name, b in negative.named_buffers():
                b.copy_(buffers[name])

    # ------------------------------------------------------------------ loss
    def _apply_memory_format(self) -> None:
        if self._channels_last and not self._formatted:
            self.negatives.to(memory_format=torch.channels_last)
            if self.features is not None:
                self.features.to(memory_format=torch.channels_last)
        self._formatted = True

    @property
    def needs_fp32_forward(self) -> bool:
        # ŷ in bf16 would put the distance to late hard negatives at the rounding level
        return self.active and self.cfg.loss_precision == "fp32"

    def negative_outputs(self, lq: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            return [negative(lq) for negative in self.negatives]

    def weighted_distance(
        self, prediction: torch.Tensor, negatives: list[torch.Tensor]
    ) -> torch.Tensor:
        """(1/K) Σ_k Σ_l w_l · mean|φ_l(ŷ) − φ_l(n_k)|; φ(ŷ) is computed once for all k."""
        assert self.features is not None
        k = len(negatives)
        anchor = self.features(prediction)
        with torch.no_grad():
            if self.cfg.negative_features == "batched":
                stacked = self.features(torch.cat(negatives))
                neg_feats = [stacked]
            else:
                neg_feats = [self.features(n) for n in negatives]
        total = prediction.new_zeros((), dtype=torch.float32)
        for layer, w in zip(self.cfg.feature_layers, self.cfg.layer_weights, strict=True):
            a = anchor[layer].float()
            if self.cfg.negative_features == "batched":
                n = neg_feats[0][layer].float().unflatten(0, (k, a.shape[0]))
                # Equal-sized terms: the mean over (K, B, C, H, W) is (1/K) Σ_k mean_k.
                d = (a.unsqueeze(0) - n).abs().mean()
            else:
                d = sum((a - f[layer].float()).abs().mean() for f in neg_feats) / k
            total = total + w * d
        return total

    def loss_terms(
        self, prediction: torch.Tensor, batch: dict[str, torch.Tensor], iteration: int
    ) -> dict[str, torch.Tensor]:
        if not self.active:
            return {}
        self._apply_memory_format()
        lq = batch["lq"]
        if self._channels_last:
            lq = lq.contiguous(memory_format=torch.channels_last)
        distance = self.weighted_distance(prediction, self.negative_outputs(lq))
        d = distance.detach()
        self._dist_sum = d if self._dist_sum is None else self._dist_sum + d
        self._dist_count += 1
        return {"spn": -self.cfg.weight * distance}

    # ------------------------------------------------------------------ reporting
    def metrics(self, iteration: int) -> dict[str, float]:
        """Mean unweighted distance to the negatives since the last report (this rank's)."""
        if self._dist_sum is None or not self._dist_count:
            return {}
        value = float(self._dist_sum) / self._dist_count
        self._dist_sum, self._dist_count = None, 0
        return {"negative_distance": value}

    def notes(self) -> list[str]:
        return list(self._notes)

    def extra_repr(self) -> str:
        c = self.cfg
        return (
            f"kind={c.negative_kind}, weight={c.weight:g}, steps={c.negative_step_set}, "
            f"betas={c.betas}, neg_start={c.neg_start:g}"
        )

