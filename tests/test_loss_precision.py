"""Loss networks and distances in fp32 under the engine's bf16 autocast (issue 21).

Each test runs the Trainer's own ``training_step`` with ``train.amp`` on (the default) and CPU
bf16 autocast standing in for the GPU's (the engine's ``autocast`` switch, which is off on CPU
otherwise), watches what the method's ``loss_terms`` received and returned, and compares the
term and its gradient with a float64 computation from the same inputs. The default
(``loss_precision: fp32``) must match to fp32 accuracy; the bf16 opt-in, which is what the
engine did for every method before, visibly does not. SPN also needs its ŷ in fp32: the engine
runs the forward without autocast for it.
"""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from resweep.config import ExperimentConfig
from resweep.engine.trainer import Trainer
from resweep.losses.distribution_distances import pairwise_bhattacharyya
from resweep.methods import Method

from conftest import tiny_config_dict

MEAN = torch.tensor([0.485, 0.456, 0.406], dtype=torch.float64).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225], dtype=torch.float64).view(1, 3, 1, 1)


# --------------------------------------------------------------------------- helpers
def _trainer(config: dict[str, Any], tmp_path: Path) -> Trainer:
    trainer = Trainer(ExperimentConfig.from_dict(config), cache_dir=tmp_path, log=lambda _m: None)
    assert trainer.cfg.train.amp  # the default; off CPU it is what turns autocast on
    trainer.autocast = True  # CPU bf16 autocast stands in for CUDA's, through the same switch
    return trainer


def _observe(method: Method) -> dict[str, Any]:
    """Record what the engine hands ``method.loss_terms`` and what it returns, with the
    gradient of its terms with respect to the prediction (the engine's backward still runs)."""
    seen: dict[str, Any] = {}
    original = method.loss_terms

    def spy(prediction: torch.Tensor, batch: dict[str, torch.Tensor], iteration: int) -> dict[str, torch.Tensor]:
        terms = original(prediction, batch, iteration)
        seen.update(prediction=prediction.detach().clone(), batch=batch, terms={k: v.detach() for k, v in terms.items()})
        seen["grad"] = torch.autograd.grad(sum(terms.values()), prediction, retain_graph=True)[0]
        return terms

    method.loss_terms = spy  # type: ignore[method-assign]
    return seen


def _near_target_batch(trainer: Trainer, noise: float = 4e-3) -> dict[str, torch.Tensor]:
    """A batch whose ground truth sits ``noise`` away from the model's output, as late in
    training, where a feature distance should shrink towards 0."""
    g = torch.Generator().manual_seed(1)
    lq = torch.rand(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        y_hat = trainer.model(lq)
    return {"lq": lq, "gt": y_hat + noise * torch.randn(y_hat.shape, generator=g)}


def _errors(seen: dict[str, Any], name: str, reference: torch.Tensor, pred64: torch.Tensor) -> tuple[float, float]:
    """(relative error of the term, relative error of its gradient) against float64."""
    (grad64,) = torch.autograd.grad(reference, pred64)
    term = float(seen["terms"][name])
    loss_err = abs(term - reference.item()) / abs(reference.item())
    grad_err = ((seen["grad"].double() - grad64).norm() / grad64.norm()).item()
    return loss_err, grad_err


def _vgg_head(seed: int) -> dict[str, torch.Tensor]:
    """A VGG-16 weights file up to relu2_2 (random, He-like scale): a tiny VGG-like net."""
    g = torch.Generator().manual_seed(seed)
    shapes = {0: (64, 3), 2: (64, 64), 5: (128, 64), 7: (128, 128)}
    state = {}
    for index, (out_ch, in_ch) in shapes.items():
        state[f"features.{index}.weight"] = torch.randn(out_ch, in_ch, 3, 3, generator=g) * (1.5 / math.sqrt(in_ch * 9))
        state[f"features.{index}.bias"] = torch.randn(out_ch, generator=g) * 0.1
    return state


def _vgg64(x: torch.Tensor, head: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """relu1_2 and relu2_2 of ``head`` in float64, plain functional calls."""
    w = {k: v.double() for k, v in head.items()}

    def conv(h: torch.Tensor, i: int) -> torch.Tensor:
        return F.conv2d(h, w[f"features.{i}.weight"], w[f"features.{i}.bias"], padding=1).relu()

    r12 = conv(conv((x - MEAN) / STD, 0), 2)
    r22 = conv(conv(F.max_pool2d(r12, 2), 5), 7)
    return {"relu1_2": r12, "relu2_2": r22}


@pytest.fixture
def vgg_file(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    head = _vgg_head(seed=4)
    path = tmp_path / "vgg16_head.pth"
    torch.save(head, path)
    return path, head


def _config(methods: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return tiny_config_dict(**{"methods": methods, "data.patch_size": 16, "data.batch_size": 2, **overrides})


# --------------------------------------------------------------------------- perceptual
def test_perceptual_vgg_is_fp32_under_autocast(tmp_path, vgg_file):
    path, head = vgg_file
    errors = {}
    for precision in ("fp32", "bf16"):
        knobs = {"feature_net": "vgg16", "feature_layers": ["relu1_2", "relu2_2"], "layer_weights": [0.4, 0.6],
                 "distance": "l1",
                 "feature_weights": str(path), "loss_precision": precision}
        trainer = _trainer(_config({"perceptual": knobs}), tmp_path)
        seen = _observe(trainer.methods["perceptual"])
        trainer.training_step(_near_target_batch(trainer))

        pred64 = seen["prediction"].double().requires_grad_(True)
        fp, fy = _vgg64(pred64, head), _vgg64(seen["batch"]["gt"].double(), head)
        reference = sum(w * (fp[k] - fy[k].detach()).abs().mean() for k, w in (("relu1_2", 0.4), ("relu2_2", 0.6)))
        errors[precision] = _errors(seen, "perceptual", reference, pred64)
    _assert_fp32_matches_and_bf16_does_not(errors)


def _assert_fp32_matches_and_bf16_does_not(errors: dict[str, tuple[float, float]], grad_tol: float = 2e-2) -> None:
    (fp32_loss, fp32_grad), (bf16_loss, bf16_grad) = errors["fp32"], errors["bf16"]
    # fp32 gradient error: sign flips of L1 distances where the two sides nearly tie
    assert fp32_loss < 1e-5 and fp32_grad < grad_tol, errors
    assert bf16_loss > 10 * fp32_loss and bf16_grad > 10 * fp32_grad, errors


# --------------------------------------------------------------------------- MAE as a loss
TINY_PRETRAIN = {"arch": "tiny", "crop": 32, "steps": 2, "batch_size": 2,
                 "data": {"kind": "demo", "split": "all"}, "held_out_images": 2}


def _timm_tokens64(encoder: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Final patch tokens of the same weights through timm's VisionTransformer, float64."""
    from timm.models.vision_transformer import VisionTransformer

    arch = encoder.arch
    ref = VisionTransformer(
        img_size=arch.img_size, patch_size=arch.patch_size, embed_dim=arch.embed_dim,
        depth=arch.depth, num_heads=arch.num_heads, num_classes=0, global_pool="",
        qkv_bias=True, norm_layer=functools.partial(nn.LayerNorm, eps=1e-6),
    ).double().eval()
    ref.load_state_dict({k: v.double() for k, v in encoder.state_dict().items()})
    return ref.forward_features((x - MEAN) / STD)[:, 1:]


def test_mae_encoder_is_fp32_under_autocast(tmp_path):
    errors = {}
    for precision in ("fp32", "bf16"):
        knobs = {"variant": "ctmae", "weight": 1.0, "pretrain": TINY_PRETRAIN, "loss_precision": precision}
        trainer = _trainer(_config({"mae_loss": knobs}), tmp_path)  # the stage is made once, then reused
        method = trainer.methods["mae_loss"]
        seen = _observe(method)
        trainer.training_step(_near_target_batch(trainer))

        pred64 = seen["prediction"].double().requires_grad_(True)
        with torch.no_grad():
            target = _timm_tokens64(method.encoder, seen["batch"]["gt"].double())
        reference = (_timm_tokens64(method.encoder, pred64) - target).abs().mean()
        errors[precision] = _errors(seen, "mae", reference, pred64)
    _assert_fp32_matches_and_bf16_does_not(errors)


# --------------------------------------------------------------------------- RCL, Bhattacharyya
def test_rcl_bhattacharyya_and_encoder_are_fp32_under_autocast(tmp_path, vgg_file):
    """The overlap Σ sqrt(p q) of two close histograms is near 1, where a bf16 matrix product
    rounds in steps of 2⁻⁸: the distances −log(overlap) between residual crops are then
    mostly rounding. The consistency encoder (here the tiny VGG) is a loss network too."""
    path, head = vgg_file
    errors: dict[str, tuple[float, float]] = {}
    consistency: dict[str, float] = {}
    matrices: dict[str, float] = {}
    for precision in ("fp32", "bf16"):
        knobs = {"distance": "bhattacharyya", "crop_size": 8, "crop_overlap": 0.5,
                 "encoder": "vgg16", "encoder_layer": "relu2_2", "encoder_weights": str(path),
                 "loss_precision": precision}
        config = _config({"rcl": knobs}, **{"task": {"kind": "hetero_denoise", "scale": 1},
                                            "model.name": "unet_tiny", "data.batch_size": 4})
        trainer = _trainer(config, tmp_path)
        rcl = trainer.methods["rcl"]
        seen: dict[str, Any] = {}
        distance, loss_terms = rcl.distance, rcl.loss_terms

        def record_crops(a: torch.Tensor, b: torch.Tensor, distance=distance, seen=seen, **kwargs) -> torch.Tensor:
            seen["crops"], seen["matrix"] = [a, b], distance(a, b, **kwargs)
            return seen["matrix"]

        def record_terms(prediction, batch, iteration, loss_terms=loss_terms, seen=seen):
            terms = loss_terms(prediction, batch, iteration)
            seen.update(prediction=prediction.detach().clone(), noisy=batch["lq"].detach().clone(),
                        terms={k: v.detach() for k, v in terms.items()})
            seen["crop_grads"] = torch.autograd.grad(terms["rcl_contrast"], seen["crops"], retain_graph=True)
            return terms

        rcl.distance, rcl.loss_terms = record_crops, record_terms
        lq = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2))
        trainer.training_step({"lq": lq})

        crops64 = [c.detach().double().requires_grad_(True) for c in seen["crops"]]
        matrix = pairwise_bhattacharyya(*crops64)  # the same distance, evaluated in float64
        logits = -matrix / rcl.cfg.temperature
        reference = rcl.cfg.alpha * F.cross_entropy(logits, torch.arange(4), reduction="sum")
        grads64 = torch.cat([g.flatten() for g in torch.autograd.grad(reference, crops64)])
        grads = torch.cat([g.flatten() for g in seen["crop_grads"]]).double()
        errors[precision] = (
            abs(float(seen["terms"]["rcl_contrast"]) - reference.item()) / abs(reference.item()),
            ((grads - grads64).norm() / grads64.norm()).item(),
        )
        matrices[precision] = ((seen["matrix"].detach().double() - matrix).norm() / matrix.norm()).item()
        phi = {k: _vgg64(x, head)["relu2_2"] for k, x in (("pred", seen["prediction"].double()), ("lq", seen["noisy"].double()))}
        want = ((phi["pred"] - phi["lq"]) ** 2).mean().item()
        consistency[precision] = abs(float(seen["terms"]["rcl_consistency"]) - want) / want
    # The Bhattacharyya distance no longer has a matrix product (each value votes into its
    # nearby bins), so autocast leaves it in fp32 whichever precision the method asks for: the
    # contrastive term matches float64 on both paths. The consistency encoder (a VGG) does not.
    fp32_loss, fp32_grad = errors["fp32"]
    assert fp32_loss < 1e-5 and fp32_grad < 2e-2, errors
    assert matrices["fp32"] < 1e-4, matrices
    assert consistency["fp32"] < 1e-5 and consistency["bf16"] > 10 * consistency["fp32"], consistency


# --------------------------------------------------------------------------- SPN
def _spn_distance64(pred64: torch.Tensor, negatives64: list[torch.Tensor], head: dict[str, torch.Tensor]) -> torch.Tensor:
    """(1/K) Σ_k Σ_l w_l · mean|φ_l(ŷ) − φ_l(n_k)| in float64, taps relu1_2 and relu2_2 (0.4, 0.6)."""
    phi = _vgg64(pred64, head)
    total = torch.zeros((), dtype=torch.float64)
    for n in negatives64:
        phi_n = {k: v.detach() for k, v in _vgg64(n, head).items()}
        total = total + 0.4 * (phi["relu1_2"] - phi_n["relu1_2"]).abs().mean()
        total = total + 0.6 * (phi["relu2_2"] - phi_n["relu2_2"]).abs().mean()
    return total / len(negatives64)


def test_spn_prediction_and_feature_path_are_fp32_under_autocast(tmp_path, vgg_file):
    """SPN's hard negatives (here s = 0.02 away from the model, as late in training) differ
    from ŷ by about one bf16 step. Under train.amp the engine must hand SPN the fp32 forward's
    ŷ (not a bf16 one cast up) and run the negatives and φ in fp32; the bf16 opt-in runs both
    in bf16, which also shows that the autocast here is real."""
    path, head = vgg_file
    errors = {}
    for precision in ("fp32", "bf16"):
        knobs = {"negative_step_set": [2, 3], "feature_layers": ["relu1_2", "relu2_2"], "layer_weights": [0.4, 0.6],
                 "feature_weights": str(path), "neg_start": 0.02, "loss_precision": precision}
        trainer = _trainer(_config({"spn": knobs}), tmp_path)
        spn = trainer.methods["spn"]
        assert spn.needs_fp32_forward == (precision == "fp32")
        seen = _observe(spn)
        batch = _near_target_batch(trainer)
        trainer.training_step(batch)

        with torch.no_grad():  # training_step leaves the weights alone (no optimiser step)
            fp32_forward = trainer.model(batch["lq"])
        assert seen["prediction"].dtype == torch.float32
        if precision == "fp32":
            assert torch.equal(seen["prediction"], fp32_forward)
        else:
            assert not torch.allclose(seen["prediction"], fp32_forward, rtol=0, atol=1e-4)

        pred64 = seen["prediction"].double().requires_grad_(True)
        with torch.no_grad():
            negatives64 = [copy.deepcopy(n).double()(batch["lq"].double()) for n in spn.negatives]
        reference = -spn.cfg.weight * _spn_distance64(pred64, negatives64, head)
        errors[precision] = _errors(seen, "spn", reference, pred64)
    _assert_fp32_matches_and_bf16_does_not(errors)


def test_old_feature_precision_key_still_loads_as_loss_precision():
    from resweep.methods.spn import SPNConfig

    assert SPNConfig(feature_precision="bf16").loss_precision == "bf16"
    assert SPNConfig(feature_precision="fp32", loss_precision="fp32").loss_precision == "fp32"
    with pytest.raises(ValueError, match="old name of loss_precision"):
        SPNConfig(feature_precision="bf16", loss_precision="fp32")
    config = ExperimentConfig.from_dict(tiny_config_dict(**{"methods.spn": {"feature_precision": "bf16"}}))
    assert config.methods["spn"].loss_precision == "bf16"
    assert "feature_precision" not in config.to_dict()["methods"]["spn"]


def test_every_method_defaults_to_fp32_loss_terms():
    """One knob in the method base: no method's config turns bf16 on by default."""
    from resweep.methods import METHOD_CONFIGS

    for name in METHOD_CONFIGS.names():
        assert METHOD_CONFIGS.get(name).model_fields["loss_precision"].default == "fp32", name
