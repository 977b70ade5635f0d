"""RCL's Fig. 2 as a diagnostic: the gaps d(negative) − d(positive) the method reports equal an
independent computation, the `train` stage writes them (before and after training) into its
artifact, and the dashboard of a study with that artifact draws them, escaped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from scipy.stats import wasserstein_distance

from resweep.config import ExperimentConfig
from resweep.methods import MethodContext, World
from resweep.methods.diagnostics import Diagnostic, merge_diagnostics
from resweep.methods.rcl import (
    DIAGNOSTIC_BATCHES,
    GAPS_DIAGNOSTIC,
    RCL,
    TRUE_NOISE_GROUP,
    RCLConfig,
)
from resweep.methods.spn import derive_seed
from resweep.models import create_model

from conftest import tiny_config_dict

SCRIPT = "<script>alert(1)</script>"


def _experiment(**overrides) -> dict:
    return tiny_config_dict(**{
        "name": "rcl-fig2-tiny", "task": {"kind": "hetero_denoise", "scale": 1}, "model.name": "unet_tiny",
        "data.patch_size": 16, "data.batch_size": 3, "data.augment": False, "train.iterations": 3,
        "train.log_every": 1, "eval.sets": [],
        "methods.rcl": {"crop_size": 8, "crop_overlap": 0.5, "encoder": "resnet18", "encoder_layer": "layer1",
                        "allow_random_features": True},
        **overrides,
    })


class KeyedNoisy(torch.utils.data.Dataset):
    """A keyed dataset of noisy patches: the noise is a function of the key, as in training;
    ``with_clean`` keeps the clean patch (``gt``), as the training data has it before RCL drops it."""

    def __init__(self, with_clean: bool = False) -> None:
        self.with_clean = with_clean

    def __len__(self) -> int:
        return 5

    def __getitem__(self, key):
        index, seed = key
        g = torch.Generator().manual_seed(seed % 2**31)
        clean = torch.linspace(0.1, 0.9, 16).expand(3, 16, 16) * (0.5 + 0.1 * index)
        sample = {"lq": clean + (0.01 + 0.03 * index) * torch.randn(clean.shape, generator=g), "key": index}
        return {**sample, "gt": clean} if self.with_clean else sample


def test_fig2_gaps_equal_scipy_wasserstein_on_a_loop():
    exp = ExperimentConfig.from_dict(_experiment())
    torch.manual_seed(0)
    model = create_model("unet_tiny", scale=1)
    cfg = RCLConfig(crop_size=8, crop_overlap=0.5, consistency_weight=0)
    rcl = RCL(cfg, MethodContext(config=exp, model=model, task=None, world=World(), cache_dir=Path("."),
                                 log=lambda _m: None))
    dataset = KeyedNoisy()
    model.train()
    (before,) = rcl.diagnostics(model, dataset, "start")
    assert model.training  # restored
    assert before.name == GAPS_DIAGNOSTIC and list(before.samples) == ["before training (initial weights)"]
    got = np.array(next(iter(before.samples.values())))
    b = exp.data.batch_size
    assert got.shape == (DIAGNOSTIC_BATCHES * b * (b - 1),)

    # independent: the same fixed images and crop corners, residuals in float64, one scipy
    # wasserstein_distance per (anchor, other) pair, in a loop
    from resweep.engine.sampler import batch_keys

    model.eval()
    want, want_true = [], []
    clean_data = KeyedNoisy(with_clean=True)
    for i in range(DIAGNOSTIC_BATCHES):
        keys = batch_keys(derive_seed(0, "rcl-diagnostic-images"), i, 0, b, 1, len(dataset))
        noisy = torch.stack([dataset[k]["lq"] for k in keys])
        noise = (noisy - torch.stack([clean_data[k]["gt"] for k in keys])).double().numpy()
        g = torch.Generator().manual_seed(derive_seed(0, "rcl-diagnostic-crops", i))
        span = 8 + 4
        tops = torch.randint(0, 16 - span + 1, (b,), generator=g).tolist()
        lefts = torch.randint(0, 16 - span + 1, (b,), generator=g).tolist()
        corners = list(zip(tops, lefts, strict=True))

        def own_residual(crop: torch.Tensor) -> np.ndarray:
            # the network run on this one crop alone (Algorithm 1), residual in float64
            with torch.no_grad():
                return (crop - model(crop[None])[0]).double().numpy().ravel()

        first = [own_residual(noisy[j, :, t:t + 8, s:s + 8]) for j, (t, s) in enumerate(corners)]
        second = [own_residual(noisy[j, :, t + 4:t + 12, s + 4:s + 12]) for j, (t, s) in enumerate(corners)]
        true_first = [noise[j, :, t:t + 8, s:s + 8].ravel() for j, (t, s) in enumerate(corners)]
        true_second = [noise[j, :, t + 4:t + 12, s + 4:s + 12].ravel() for j, (t, s) in enumerate(corners)]
        for j in range(b):
            positive = wasserstein_distance(first[j], second[j])
            want.extend(wasserstein_distance(first[j], second[n]) - positive for n in range(b) if n != j)
            positive = wasserstein_distance(true_first[j], true_second[j])
            want_true.extend(wasserstein_distance(true_first[j], true_second[n]) - positive for n in range(b) if n != j)
    np.testing.assert_allclose(got, np.array(want), rtol=1e-4, atol=1e-7)
    assert np.abs(got).max() > 0  # the images have different noise levels: the gaps are not all 0

    # with clean images behind RCL's wrapper (as in training): the true noise's curve too, on
    # the same crops; the network's groups are unchanged
    (with_truth,) = rcl.diagnostics(model, rcl.wrap_train_dataset(KeyedNoisy(with_clean=True)), "start")
    assert with_truth.reference_group == TRUE_NOISE_GROUP
    assert list(with_truth.samples) == ["before training (initial weights)", TRUE_NOISE_GROUP]
    assert with_truth.samples["before training (initial weights)"] == before.samples["before training (initial weights)"]
    np.testing.assert_allclose(with_truth.samples[TRUE_NOISE_GROUP], np.array(want_true), rtol=1e-4, atol=1e-7)
    assert np.mean(np.array(want_true) > 0) > 0.5  # the true noise tells these images apart

    # the same images, noise and crops at the end: only the weights change the samples
    (again,) = rcl.diagnostics(model, dataset, "start")
    assert next(iter(again.samples.values())) == before.samples[next(iter(before.samples))]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    (after,) = rcl.diagnostics(model, dataset, "end")
    merged = merge_diagnostics([before], [after])[GAPS_DIAGNOSTIC]
    assert list(merged.samples) == ["before training (initial weights)", "after training"]
    assert merged.samples["after training"] != merged.samples["before training (initial weights)"]
    # round trip, and the share above the reference is the plain count
    back = Diagnostic.from_json(merged.to_json())
    assert back == merged
    assert back.share_above("after training") == pytest.approx(
        float(np.mean(np.array(merged.samples["after training"]) > 0)))


def test_study_dashboard_draws_fig2_of_its_rcl_artifact(tmp_path, monkeypatch):
    """A real `train` stage (RCL pretraining, 3 steps) committed into a study's storage, the
    study's artifacts.parquet naming it, trials reading it: the dashboard draws its Fig. 2."""
    from test_analysis import make_study

    from resweep.analysis import build_report
    from resweep.stages.base import parse_stage, stage_key
    from resweep.stages.produce import PlannedStage, produce
    from resweep.stages.train import DIAGNOSTICS_DIR, METRICS_FILE
    from resweep.study.layout import ARTIFACTS_FILE, TRIALS_FILE

    monkeypatch.delenv("RESWEEP_RESNET_WEIGHTS", raising=False)
    study = make_study(tmp_path / "study", [("sl", {"k": 0}), (f"rcl {SCRIPT}", {"k": 1})],
                       name="rcl fig2", baseline="sl")
    definition = parse_stage({"kind": "train", "experiment": _experiment()})
    key = stage_key(definition)
    record = produce(PlannedStage(key, definition), str(study), log=lambda _m: None, progress=False)
    assert record.status == "produced"
    pq.write_table(pa.Table.from_pylist([record.row()]), study / ARTIFACTS_FILE)
    trials = pq.read_table(study / TRIALS_FILE).to_pylist()
    for t in trials:
        t["artifacts"] = json.dumps({"model.init_from": key}) if t["label"].startswith("rcl") else None
    pq.write_table(pa.Table.from_pylist(trials), study / TRIALS_FILE)

    # the artifact: one file with both phases; the shares are among its metrics
    from resweep.stages import ArtifactStore

    folder = ArtifactStore(study).fetch(key, tmp_path / "scratch")
    diagnostic = Diagnostic.from_json((folder / DIAGNOSTICS_DIR / f"{GAPS_DIAGNOSTIC}.json").read_text())
    # the training data has clean images: the true noise's reference curve is there too
    assert list(diagnostic.samples) == ["before training (initial weights)", TRUE_NOISE_GROUP, "after training"]
    assert diagnostic.reference_group == TRUE_NOISE_GROUP
    assert all(len(v) == DIAGNOSTIC_BATCHES * 3 * 2 for v in diagnostic.samples.values())
    metrics = json.loads((folder / METRICS_FILE).read_text())["metrics"]
    for phase, group in (("start", "before training (initial weights)"), ("end", "after training")):
        assert metrics[f"{GAPS_DIAGNOSTIC}.share_above_0.{phase}"] == pytest.approx(diagnostic.share_above(group))
        assert record.metrics[f"{GAPS_DIAGNOSTIC}.share_above_0.{phase}"] == pytest.approx(diagnostic.share_above(group))

    page = build_report(study, out_dir=tmp_path / "report").index_path.read_text()
    section = page.split('<section id="diagnostics">', 1)[1].split("</section>", 1)[0]
    assert 'id="diagnostic-0"' in section and key in section
    assert "RCL Fig. 2: EMD(negative) \\u2212 EMD(positive)" in section  # JSON-escaped minus
    share = diagnostic.share_above("after training")
    assert f"after training ({share:.0%} \\u0026gt; 0)" in section  # legend: the share of positive gaps
    assert f"{share:.0%} above 0" in section  # and the annotation
    # the true noise is drawn as a line over the bars
    spec = section.split('id="diagnostic-0"', 1)[1]
    assert '"mode": "lines"' in spec.replace('"mode":"lines"', '"mode": "lines"')
    assert "true noise (lq \\u2212 gt)" in section
    # the label of the trial that reads the artifact is in the figure, escaped, never raw HTML
    assert "\\u0026lt;script\\u0026gt;alert(1)" in section
    assert "<script>alert" not in section


def test_collecting_diagnostics_leaves_training_bit_identical():
    """The stage asks for the diagnostics before training: that must not move any RNG or
    weight, so an artifact's weights are the same as without them (keys did not change)."""
    from resweep.engine.trainer import Trainer

    def train(with_diagnostics: bool) -> dict:
        trainer = Trainer(ExperimentConfig.from_dict(_experiment()), log=lambda _m: None)
        if with_diagnostics:
            assert trainer.diagnostics("start")[0].name == GAPS_DIAGNOSTIC
        trainer.fit()
        return trainer.model.state_dict()

    plain, diagnosed = train(False), train(True)
    assert all(torch.equal(plain[k], diagnosed[k]) for k in plain)
