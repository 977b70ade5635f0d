"""Proxy evaluation: last-layer-only fine-tuning from pretrained weights, with a re-initialised head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from resweep.config import ExperimentConfig
from resweep.engine.finetune import apply_finetune_setup
from resweep.engine.trainer import Trainer
from resweep.errors import ConfigError
from resweep.models import create_model
from tests.conftest import tiny_config_dict


def _pretrained_file(tmp_path) -> tuple[str, dict[str, torch.Tensor]]:
    torch.manual_seed(123)  # not the fine-tuning seed: the weights differ from a fresh init
    state = {k: v.clone() for k, v in create_model("unet_tiny").state_dict().items()}
    path = tmp_path / "pretrained.pt"
    torch.save(state, path)
    return str(path), state


def _finetune_config(path: str, trainable: str, reinit: bool, seed: int = 0) -> ExperimentConfig:
    return ExperimentConfig.from_dict(tiny_config_dict(**{
        "task": {"kind": "hetero_denoise", "scale": 1},
        "model": {"name": "unet_tiny", "init_from": path, "reinit_last_layer": reinit},
        "train.trainable": trainable, "train.iterations": 4, "train.seed": seed,
        "data.patch_size": 16, "data.batch_size": 2, "optim.lr": 1e-2,
    }))


def test_last_layer_finetuning_leaves_every_other_parameter_bit_identical(tmp_path):
    path, pretrained = _pretrained_file(tmp_path)
    trainer = Trainer(_finetune_config(path, "last_layer", reinit=True), cache_dir=tmp_path,
                      log=lambda _m: None)
    head = {n for n, _ in trainer.model.named_parameters() if n.startswith("last_layer.")}
    assert head == {"last_layer.weight", "last_layer.bias"}
    # the head was re-initialised: it no longer holds the pretrained values
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    assert not torch.equal(start["last_layer.weight"], pretrained["last_layer.weight"])
    # the optimiser holds the head only
    opt_params = {id(p) for g in trainer.optimizer.param_groups for p in g["params"]}
    assert opt_params == {id(p) for n, p in trainer.model.named_parameters() if n in head}
    assert trainer.fit().status == "finished"
    for name, value in trainer.model.named_parameters():
        if name in head:
            assert not torch.equal(value, start[name]), f"{name} was not trained"
        else:
            assert torch.equal(value, pretrained[name]), f"{name} changed while frozen"


def test_full_finetuning_changes_the_backbone_and_seeds_change_the_head(tmp_path):
    path, pretrained = _pretrained_file(tmp_path)
    trainer = Trainer(_finetune_config(path, "all", reinit=False), cache_dir=tmp_path, log=lambda _m: None)
    assert torch.equal(trainer.model.last_layer.weight, pretrained["last_layer.weight"])  # kept
    trainer.fit()
    changed = [n for n, p in trainer.model.named_parameters() if not torch.equal(p, pretrained[n])]
    assert any(not n.startswith("last_layer.") for n in changed)
    heads = [
        Trainer(_finetune_config(path, "last_layer", reinit=True, seed=s), cache_dir=tmp_path,
                log=lambda _m: None).model.last_layer.weight.detach().clone()
        for s in (0, 0, 1)
    ]
    assert torch.equal(heads[0], heads[1]) and not torch.equal(heads[0], heads[2])


def test_models_without_a_last_layer_are_refused():
    with pytest.raises(ConfigError, match="exposes no last_layer"):
        apply_finetune_setup(nn.Sequential(nn.Conv2d(3, 3, 3)), "last_layer")
    apply_finetune_setup(nn.Sequential(nn.Conv2d(3, 3, 3)), "all")  # the default needs nothing


def test_sr_head_on_a_denoising_backbone(tmp_path):
    # a scale-1 backbone fine-tuned for x2 SR: the upsampler is new, trainable with the last layer
    path, pretrained = _pretrained_file(tmp_path)
    data = _finetune_config(path, "last_layer", reinit=True).to_dict()
    data["task"] = {"kind": "hetero_denoise_sr", "scale": 2}
    with pytest.raises(ConfigError, match=r"missing from the file: upsample\..*init_new_head"):
        Trainer(ExperimentConfig.from_dict(data), cache_dir=tmp_path, log=lambda _m: None)
    data["model"]["init_new_head"] = True
    trainer = Trainer(ExperimentConfig.from_dict(data), cache_dir=tmp_path, log=lambda _m: None)
    trainable = {n for n, p in trainer.model.named_parameters() if p.requires_grad}
    new = {n for n, _ in trainer.model.named_parameters() if n not in pretrained}
    assert new and all(n.startswith("upsample.") for n in new)
    assert trainable == new | {"last_layer.weight", "last_layer.bias"}
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit()
    for name, value in trainer.model.named_parameters():
        if name in trainable:
            assert not torch.equal(value, start[name]), f"{name} was not trained"
        else:
            assert torch.equal(value, pretrained[name]), f"{name} changed while frozen"
    # a file with weights the model lacks, or other shapes, is still refused
    bad = dict(pretrained, extra=torch.zeros(1))
    torch.save(bad, tmp_path / "bad.pt")
    data["model"]["init_from"] = str(tmp_path / "bad.pt")
    with pytest.raises(ConfigError, match="does not have: extra"):
        Trainer(ExperimentConfig.from_dict(data), cache_dir=tmp_path, log=lambda _m: None)


def test_literal_proxy_protocol_bicubic_input_scale1_unet_last_layer_only():
    """RCL Table 2's literal protocol: a scale-1 U-Net on the bicubic-upsampled input; the
    pretrained backbone loads with no new head and only its last conv trains."""
    import torch.nn.functional as F

    from resweep.engine.finetune import load_initial_weights

    torch.manual_seed(0)
    backbone = create_model("unet_tiny", scale=1)
    head = create_model("unet_tiny", scale=2, sr_head="bicubic_input")
    assert load_initial_weights(head, backbone.state_dict(), allow_new_head=False) == []
    apply_finetune_setup(head, trainable="last_layer", log=lambda _m: None)
    trainable = {n for n, p in head.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in head.named_parameters() if n.startswith("last_layer.")}
    x = torch.rand(2, 3, 12, 12)
    up = F.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False)
    with torch.no_grad():
        assert head(x).shape == (2, 3, 24, 24)
        torch.testing.assert_close(head(x), backbone(up))
        # without the global residual: the network's output alone
        bare = create_model("unet_tiny", scale=2, sr_head="bicubic_input", global_residual=False)
        bare.load_state_dict(backbone.state_dict())
        torch.testing.assert_close(bare(x) + up, backbone(up))
    with pytest.raises(ConfigError, match="sr_head"):
        create_model("unet_tiny", scale=2, sr_head="nearest")
