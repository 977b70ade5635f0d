"""ECO: pair alignment on real images, schedule shapes, the shared centroid cache (in one process
and across processes), cache invalidation, teacher sources, config validation, and short real
runs through the engine (teacher trained first, then ECO evaluated on CSet5)."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import default_collate

from resweep.config import ExperimentConfig
from resweep.data import build_train_dataset
from resweep.data.datasets import random_crop_params
from resweep.degradations.imresize import bicubic_downsample
from resweep.degradations.tasks import build_task
from resweep.engine.checkpoint import save_checkpoint
from resweep.engine.trainer import STATUS_FINISHED, Trainer
from resweep.errors import ConfigError, ResweepError
from resweep.methods import MethodContext, World
from resweep.methods import eco_centroids as cache
from resweep.methods.eco import ECO, ECOConfig, alpha_at, blend
from resweep.methods.eco_teacher import latest_checkpoint
from resweep.models import create_model
from resweep.stages import PRODUCED, REUSED, ArtifactStore, prepare_local

torch.set_num_threads(1)

DATASETS = Path("/work/shared/datasets")
CBSD = DATASETS / "CBSD432"
CSET5 = DATASETS / "CSet5"
needs_data = pytest.mark.skipif(
    not (CBSD.is_dir() and CSET5.is_dir()), reason="needs /work/shared/datasets/CBSD432 and CSet5"
)


# --------------------------------------------------------------------------- helpers
def _teacher_weights(path: Path, seed: int = 0, scale: int = 2) -> Path:
    torch.manual_seed(seed)
    torch.save(create_model("edsr_tiny", scale=scale).state_dict(), path)
    return path


def _config(teacher: dict[str, Any], *, images: int = 3, **sections: Any) -> ExperimentConfig:
    data: dict[str, Any] = {
        "name": "eco-test",
        "task": {"kind": "sr", "scale": 2, "quantize_input": False},
        "model": {"name": "edsr_tiny"},
        "data": {
            "train": {"kind": "folder", "path": str(CBSD), "max_images": images},
            "patch_size": 16,
            "batch_size": 4,
        },
        "optim": {"lr": 1e-3},
        "train": {"iterations": 10, "log_every": 5, "device": "cpu", "seed": 0},
        "eval": {"sets": [], "every": 10},
        "methods": {"eco": {"teacher": {"tile": 512, **teacher}}},
    }
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(name), dict):
            data[name] = {**data[name], **value}
        else:
            data[name] = value
    return ExperimentConfig.from_dict(data)


def _method(cfg: ExperimentConfig, cache_dir: Path, prepare: bool = False) -> ECO:
    """ECO built as the engine builds it; ``prepare``: make its stages first (as Trainer does)."""
    artifacts: dict[str, Path] = {}
    records: list[Any] = []
    if prepare:
        artifacts, records = prepare_local(cfg, cache_dir, log=lambda _msg: None)
    task = build_task(cfg.task)
    context = MethodContext(
        config=cfg,
        model=create_model(cfg.model.name, scale=cfg.scale),
        task=task,
        world=World(),
        cache_dir=cache_dir,
        log=lambda _msg: None,
        artifacts={k.removeprefix("eco."): v for k, v in artifacts.items()},
    )
    method = ECO(cfg.methods["eco"], context)
    method.records = records  # type: ignore[attr-defined]
    return method


def _wrapped(cfg: ExperimentConfig, cache_dir: Path) -> tuple[ECO, Any, Any]:
    method = _method(cfg, cache_dir, prepare=True)
    base = build_train_dataset(cfg, build_task(cfg.task))
    return method, base, method.wrap_train_dataset(base)


def _computed(cache_dir: Path, kind: str = "eco_centroids") -> list[str]:
    """Keys of the committed artifacts of ``kind`` in the store under ``cache_dir``."""
    store = ArtifactStore(cache_dir)
    return [k for k in store.list_keys() if k.startswith(f"{kind}-") and store.committed(k) is not None]


def _statuses(records: list[Any], kind: str = "eco_centroids") -> list[str]:
    return [r.status for r in records if r.kind == kind]


class ListReporter:
    """Keeps the reports; writes checkpoints the way ``resweep train`` lays them out."""

    def __init__(self, run_dir: Path | None = None):
        self.reports: list[dict[str, Any]] = []
        self.run_dir = run_dir

    def report(self, metrics: dict[str, Any], checkpoint: dict[str, Any] | None) -> None:
        self.reports.append(dict(metrics))
        if checkpoint is not None and self.run_dir is not None:
            save_checkpoint(checkpoint, self.run_dir / "ray_train" / f"checkpoint_{checkpoint['iteration']:08d}")


# --------------------------------------------------------------------------- schedule
def test_schedule_shapes_hand_computed() -> None:
    T = 1000
    lin = {"shape": "linear", "alpha_start": 0.2, "ramp_fraction": 0.5}
    assert alpha_at(0, T, **lin) == pytest.approx(0.2)
    assert alpha_at(250, T, **lin) == pytest.approx(0.6)  # p = 250/500
    assert alpha_at(500, T, **lin) == pytest.approx(1.0)
    assert alpha_at(900, T, **lin) == pytest.approx(1.0)

    cos = {"shape": "cosine", "alpha_start": 0.0, "ramp_fraction": 1.0}
    assert alpha_at(0, T, **cos) == pytest.approx(0.0)
    assert alpha_at(250, T, **cos) == pytest.approx(0.5 * (1 - math.sqrt(0.5)))  # 0.146447
    assert alpha_at(500, T, **cos) == pytest.approx(0.5)
    assert alpha_at(750, T, **cos) == pytest.approx(0.5 * (1 + math.sqrt(0.5)))  # 0.853553

    step = {"shape": "step", "alpha_start": 0.0, "ramp_fraction": 0.8, "step_count": 4}  # ramp 800
    assert alpha_at(199, T, **step) == 0.0
    assert alpha_at(200, T, **step) == pytest.approx(0.25)
    assert alpha_at(599, T, **step) == pytest.approx(0.5)
    assert alpha_at(600, T, **step) == pytest.approx(0.75)
    assert alpha_at(800, T, **step) == pytest.approx(1.0)
    switch = {"shape": "step", "alpha_start": 0.1, "ramp_fraction": 0.5, "step_count": 1}
    assert alpha_at(499, T, **switch) == pytest.approx(0.1)
    assert alpha_at(500, T, **switch) == pytest.approx(1.0)

    sig = {"shape": "sigmoid"}  # the authors' clipped sigmoid
    assert alpha_at(0, T, **sig) == 0.0
    assert alpha_at(200, T, **sig) == 0.0  # 1.2·(σ(−3) − ½) < −½: clipped
    assert alpha_at(500, T, **sig) == pytest.approx(0.5)
    assert alpha_at(800, T, **sig) == 1.0
    assert alpha_at(10, T, shape="linear", ramp_fraction=0.0) == 1.0  # no ramp: vanilla


def test_method_reports_alpha_per_mode(tmp_path: Path) -> None:
    weights = _teacher_weights(tmp_path / "t.pt")
    cfg = _config({"weights": str(weights), "model": "edsr_tiny"}, train={"iterations": 100})
    cfg = cfg.with_overrides({"methods.eco.schedule": "cosine", "methods.eco.ramp_fraction": 0.5})
    method = _method(cfg, tmp_path / "cache")
    assert method.metrics(25) == {"alpha": pytest.approx(0.5)}
    assert method.metrics(60) == {"alpha": 1.0}
    kd = _method(cfg.with_overrides({"methods.eco.mode": "kd"}), tmp_path / "cache")
    assert kd.metrics(60) == {"alpha": 0.0}


# --------------------------------------------------------------------------- alignment
@needs_data
def test_alignment_on_real_images(tmp_path: Path) -> None:
    """D(y_t) == x_t for α in {0, 0.3, 1}: whole images from the cache, and training crops
    (interior: a crop's own bicubic differs from the whole image's within 2 LR pixels)."""
    weights = _teacher_weights(tmp_path / "t.pt")
    cfg = _config({"weights": str(weights), "model": "edsr_tiny"}, data={"augment": True})
    method, base, wrapped = _wrapped(cfg, tmp_path / "cache")
    store = method.store
    assert store is not None and len(store) == 3
    for i in range(3):
        pair = base.full_pair(i)
        c, c_lr = store.centroid(i), store.centroid_lr(i)
        assert c.shape == pair["gt"].shape and c_lr.shape == pair["lq"].shape
        assert float(c.min()) >= 0.0 and float(c.max()) <= 1.0
        for alpha in (0.0, 0.3, 1.0):
            x_t = alpha * pair["lq"] + (1 - alpha) * c_lr
            y_t = alpha * pair["gt"] + (1 - alpha) * c
            assert (bicubic_downsample(y_t, 2) - x_t).abs().max() < 1e-5

    batch = default_collate([wrapped[(i % 3, 100 + i)] for i in range(6)])
    assert set(batch) >= {"lq", "gt", "centroid", "centroid_lr"}
    for alpha in (0.0, 0.3, 1.0):
        out = blend(batch, alpha)
        err = bicubic_downsample(out["gt"], 2) - out["lq"]
        assert err[..., 2:-2, 2:-2].abs().max() < 1e-5, alpha
    # noise-free pairs are aligned, KD pairs are not (the teacher does not downsample to x)
    nf, kd = blend(batch, 0.0, "noise_free"), blend(batch, 0.0, "kd")
    assert (bicubic_downsample(nf["gt"], 2) - nf["lq"])[..., 2:-2, 2:-2].abs().max() < 1e-5
    assert (bicubic_downsample(kd["gt"], 2) - kd["lq"])[..., 2:-2, 2:-2].abs().max() > 1e-3

    # crops come from the same place of every tensor (no augmentation: compare positions)
    plain = build_train_dataset(cfg.with_overrides({"data.augment": False}), build_task(cfg.task))
    plain = method.wrap_train_dataset(plain)
    sample = plain[(1, 7)]
    top, left = random_crop_params(plain._lq_hw[1], 16, torch.Generator().manual_seed(7))
    assert torch.equal(sample["centroid"], store.centroid(1)[:, top * 2 : top * 2 + 32, left * 2 : left * 2 + 32])
    assert torch.equal(sample["centroid_lr"], store.centroid_lr(1)[:, top : top + 16, left : left + 16])
    assert torch.equal(sample["gt"], base.full_pair(1)["gt"][:, top * 2 : top * 2 + 32, left * 2 : left * 2 + 32])


@needs_data
def test_realworld_sr_carries_the_sample_noise(tmp_path: Path) -> None:
    """realworld_sr: x = D(y) + n, and the mixed input is D(y_t) + n for every α."""
    weights = _teacher_weights(tmp_path / "t.pt")
    cfg = _config(
        {"weights": str(weights), "model": "edsr_tiny"},
        images=2,
        task={"kind": "realworld_sr", "noise_sigma": 10.0},
    )
    method, _, wrapped = _wrapped(cfg, tmp_path / "cache")
    assert method.store is not None and method.store.has_clean_lr
    batch = default_collate([wrapped[(i % 2, 50 + i)] for i in range(4)])
    noise = batch["lq"] - batch["clean_lr"]
    assert 8 / 255 < float(noise[..., 2:-2, 2:-2].std()) < 12 / 255
    for alpha in (0.0, 0.3, 1.0):
        out = blend(batch, alpha)
        err = out["lq"] - (bicubic_downsample(out["gt"], 2) + noise)
        assert err[..., 2:-2, 2:-2].abs().max() < 1e-5, alpha


# --------------------------------------------------------------------------- the cache
@needs_data
def test_trials_share_one_centroid_computation(tmp_path: Path) -> None:
    weights = _teacher_weights(tmp_path / "t.pt")
    cfg = _config({"weights": str(weights), "model": "edsr_tiny"})
    stores, statuses = [], []
    for lr in (1e-3, 3e-4, 1e-4):  # three "trials" of a sweep: other knobs differ
        method, _, _ = _wrapped(cfg.with_overrides({"optim.lr": lr, "data.batch_size": 2}), tmp_path / "cache")
        stores.append(method.store)
        statuses += _statuses(method.records)
    assert statuses == [PRODUCED, REUSED, REUSED]
    assert len({s.path for s in stores}) == 1
    manifest = json.loads((stores[0].path / "manifest.json").read_text())
    assert manifest["computed_images"] == 3 and manifest["centroid_dtype"] == "uint8"  # 3 images, once
    assert len(_computed(tmp_path / "cache")) == 1


def _process_trial(cache_dir: str, weights: str, barrier: Any, queue: Any) -> None:
    torch.set_num_threads(1)
    cfg = _config({"weights": weights, "model": "edsr_tiny"})
    barrier.wait()  # both processes ask for the centroids at the same moment
    method, _, _ = _wrapped(cfg, Path(cache_dir))
    queue.put((_statuses(method.records), json.loads((method.store.path / "manifest.json").read_text())["pid"]))


@needs_data
def test_two_processes_compute_once(tmp_path: Path) -> None:
    weights = _teacher_weights(tmp_path / "t.pt")
    ctx = mp.get_context("spawn")
    barrier, queue = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_process_trial, args=(str(tmp_path / "cache"), str(weights), barrier, queue))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(status for statuses, _ in results for status in statuses) == [PRODUCED, REUSED]
    assert len({pid for _, pid in results}) == 1  # both read the one computation
    assert {pid for _, pid in results} <= {p.pid for p in procs}
    assert len(_computed(tmp_path / "cache")) == 1


@needs_data
def test_new_teacher_weights_invalidate_the_cache(tmp_path: Path) -> None:
    w0 = _teacher_weights(tmp_path / "a.pt", seed=0)
    copy = tmp_path / "copy_of_a.pt"
    copy.write_bytes(w0.read_bytes())
    w1 = _teacher_weights(tmp_path / "b.pt", seed=1)
    m0, _, _ = _wrapped(_config({"weights": str(w0), "model": "edsr_tiny"}), tmp_path / "cache")
    same, _, _ = _wrapped(_config({"weights": str(copy), "model": "edsr_tiny"}), tmp_path / "cache")
    assert same.store.path == m0.store.path  # keyed by content, not by path
    m1, _, _ = _wrapped(_config({"weights": str(w1), "model": "edsr_tiny"}), tmp_path / "cache")
    assert m1.store.path != m0.store.path
    assert len(_computed(tmp_path / "cache")) == 2
    assert not torch.equal(m0.store.centroid(0), m1.store.centroid(0))
    # a different data set (more images) is a different entry too
    m2, _, _ = _wrapped(_config({"weights": str(w0), "model": "edsr_tiny"}, images=4), tmp_path / "cache")
    assert m2.store.path not in (m0.store.path, m1.store.path)


# --------------------------------------------------------------------------- teacher sources
def test_latest_checkpoint_of_a_run_dir(tmp_path: Path) -> None:
    run = tmp_path / "run"
    for it in (10, 20, 5):
        save_checkpoint({"iteration": it}, run / "ray_train" / f"checkpoint_{it:08d}")
    assert latest_checkpoint(run).parent.name == "checkpoint_00000020"
    save_checkpoint({"iteration": 1}, tmp_path / "run" / "other" / "checkpoint_00000001")
    with pytest.raises(ConfigError, match="2 runs"):
        latest_checkpoint(run)
    with pytest.raises(ConfigError, match="not found"):
        latest_checkpoint(tmp_path / "missing")


@needs_data
def test_teacher_scale_must_match(tmp_path: Path) -> None:
    x2 = _config({"weights": str(_teacher_weights(tmp_path / "t.pt")), "model": "edsr_tiny"})
    ckpt = save_checkpoint(
        {"iteration": 0, "model": create_model("edsr_tiny", scale=2).state_dict(), "config": x2.to_dict()},
        tmp_path / "ckpt",
    )
    x3 = _config({"checkpoint": str(ckpt)}, task={"scale": 3})
    with pytest.raises(ConfigError) as info:
        _wrapped(x3, tmp_path / "cache")
    assert info.value.field == "methods.eco.teacher.checkpoint" and "x2" in str(info.value)


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    ("teacher", "field", "message"),
    [
        ({}, "teacher", "exactly one teacher source"),
        ({"checkpoint": "a", "run_dir": "b"}, "teacher", "checkpoint and run_dir"),
        ({"weights": "w.pt"}, "teacher.model", "needs teacher.model"),
        ({"checkpoint": "a", "model": "edsr_tiny"}, "teacher.model", "with teacher.weights only"),
        ({"weights": "w.pt", "model": "edsr_huge"}, "teacher.model", "unknown model"),
        ({"run_dir": "r", "model_kwargs": {"n_feats": 8}}, "teacher.model_kwargs", "weights only"),
        ({"train": {"model": {"name": "nope"}}}, "teacher.train", "model.name"),
        ({"train": "/no/such/teacher.yaml"}, "teacher.train", "file not found"),
        ({"run_dir": "r", "tile": 32, "tile_overlap": 32}, "teacher.tile_overlap", "smaller"),
        ({"run_dir": "r", "gpu": True}, "teacher.gpu", "Extra inputs"),
    ],
)
def test_teacher_validation_names_the_field(teacher: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"methods": {"eco": {"teacher": teacher}}})
    assert _names_field(info.value, field), str(info.value)
    assert message in str(info.value)


def _names_field(error: ConfigError, tail: str) -> bool:
    """Whether the error names ``methods.eco.<tail>``: as its field, or in its message when the
    field is only the ``methods`` mapping (older resweep.config versions dropped the method
    name from the path: 'methods.teacher'; accept that too)."""
    return error.field in (f"methods.eco.{tail}", f"methods.{tail}") or f"methods.eco.{tail}:" in str(error)


@pytest.mark.parametrize(
    ("knobs", "field"),
    [
        ({"mode": "mixup"}, "mode"),
        ({"schedule": "exp"}, "schedule"),
        ({"alpha_start": 1.5}, "alpha_start"),
        ({"ramp_fraction": -0.1}, "ramp_fraction"),
        ({"step_count": 0}, "step_count"),
        ({"centroid_dtype": "int4"}, "centroid_dtype"),
    ],
)
def test_knob_validation(knobs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        ExperimentConfig.from_dict({"methods": {"eco": {"teacher": {"run_dir": "r"}, **knobs}}})
    assert _names_field(info.value, field), str(info.value)
    missing = ExperimentConfig.from_dict({"methods": {"eco": {"teacher": {"run_dir": "r"}}}})
    assert isinstance(missing.methods["eco"], ECOConfig)
    with pytest.raises(ConfigError, match="teacher"):
        ExperimentConfig.from_dict({"methods": {"eco": {"mode": "kd"}}})


def test_task_checks_at_build(tmp_path: Path) -> None:
    teacher = {"run_dir": str(tmp_path)}
    denoise = _config(teacher, task={"kind": "denoise", "scale": 1})
    with pytest.raises(ConfigError, match="super-resolution") as info:
        _method(denoise, tmp_path)
    assert info.value.field == "task.kind"
    with pytest.raises(ConfigError, match="task.kind"):
        _method(_config(teacher, task={"kind": "denoise_sr"}), tmp_path)
    quantized = _config(teacher, task={"quantize_input": True})
    with pytest.raises(ConfigError, match="D\\(y\\) exactly") as info:
        _method(quantized, tmp_path)
    assert info.value.field == "task.quantize_input"
    allowed = quantized.with_overrides({"methods.eco.allow_quantized_input": True})
    assert any("8-bit" in note for note in _method(allowed, tmp_path).notes())


# --------------------------------------------------------------------------- real runs
@needs_data
def test_teacher_run_then_eco_run(tmp_path: Path) -> None:
    """A short vanilla run through the engine (its checkpoints laid out as `resweep train`
    writes them), then an ECO run using it as teacher, evaluated on CSet5."""
    cache_dir = tmp_path / "cache"
    teacher_cfg = ExperimentConfig.from_dict(
        {
            "name": "teacher",
            "task": {"kind": "sr", "scale": 2, "quantize_input": False},
            "model": {"name": "edsr_tiny"},
            "data": {"train": {"kind": "folder", "path": str(CBSD), "max_images": 6}, "patch_size": 16, "batch_size": 4},
            "optim": {"lr": 2e-3},
            "train": {"iterations": 20, "log_every": 10, "device": "cpu"},
            "eval": {"sets": [], "every": 10},
        }
    )
    run_dir = tmp_path / "teacher_run"
    outcome = Trainer(teacher_cfg, reporter=ListReporter(run_dir), cache_dir=cache_dir, log=lambda _m: None).fit()
    assert outcome.status == STATUS_FINISHED
    assert (run_dir / "ray_train" / "checkpoint_00000020" / "checkpoint.pt").is_file()

    eco_cfg = _config(
        {"run_dir": str(run_dir)},
        images=6,
        data={"loader_workers": 1},  # the memory-mapped cache goes to a loader process
        train={"iterations": 12, "log_every": 4},
        eval={"every": 6, "max_side": 64, "sets": [{"kind": "folder", "path": str(CSET5)}]},
    )
    reporter = ListReporter()
    trainer = Trainer(eco_cfg, reporter=reporter, cache_dir=cache_dir, log=lambda _m: None)
    assert "iteration 20" in trainer.methods["eco"].teacher_source
    outcome = trainer.fit()
    assert outcome.status == STATUS_FINISHED
    alphas = [r["eco.alpha"] for r in reporter.reports]
    assert alphas == pytest.approx([4 / 12, 6 / 12, 8 / 12, 12 / 12])  # reported after steps 4, 6, 8, 12
    final = reporter.reports[-1]
    assert math.isfinite(final["eval.CSet5.psnr_y"]) and final["eval.CSet5.psnr_y"] > 15
    assert len(_computed(cache_dir)) == 1


@needs_data
def test_teacher_trained_from_config_once(tmp_path: Path) -> None:
    """`teacher: {train: ...}`: the first trial trains it, the next one reuses it (and the
    centroids); the calling run's RNG does not depend on who trained."""
    teacher_train = {
        "name": "inline-teacher",
        "task": {"kind": "sr", "scale": 2, "quantize_input": False},
        "model": {"name": "edsr_tiny"},
        "data": {"train": {"kind": "folder", "path": str(CBSD), "max_images": 3}, "patch_size": 16, "batch_size": 2},
        "train": {"iterations": 4, "device": "cpu"},
        "eval": {"sets": []},
    }
    cfg = _config({"train": teacher_train}, train={"iterations": 2, "log_every": 1})
    rng_states, records = [], []
    for seed in (0, 0):
        trainer = Trainer(cfg.with_overrides({"train.seed": seed}), cache_dir=tmp_path / "cache", log=lambda _m: None)
        rng_states.append(torch.get_rng_state())
        records.append(trainer.artifact_records)
        assert trainer.fit().status == STATUS_FINISHED
    assert [_statuses(r, "train") for r in records] == [[PRODUCED], [REUSED]]  # the teacher, once
    assert [_statuses(r) for r in records] == [[PRODUCED], [REUSED]]
    assert len(_computed(tmp_path / "cache", "train")) == 1
    teacher_dir = ArtifactStore(tmp_path / "cache").fetch(_computed(tmp_path / "cache", "train")[0], tmp_path)
    assert (teacher_dir / "weights.pt").is_file()
    assert json.loads((teacher_dir / "metrics.json").read_text())["iteration"] == 4
    assert torch.equal(rng_states[0], rng_states[1])
    # renaming the teacher (a key that does not change its weights) reuses it
    renamed = {**teacher_train, "name": "renamed"}
    cfg2 = cfg.with_overrides({"methods.eco.teacher": {"train": renamed}})
    again = Trainer(cfg2, cache_dir=tmp_path / "cache", log=lambda _m: None)
    assert _statuses(again.artifact_records, "train") == [REUSED]
    assert len(_computed(tmp_path / "cache", "train")) == 1


def test_wrap_refuses_foreign_datasets(tmp_path: Path) -> None:
    method = _method(_config({"run_dir": str(tmp_path)}), tmp_path)
    with pytest.raises(ResweepError, match="TrainPatchDataset"):
        method.wrap_train_dataset([1, 2, 3])


def test_teacher_train_config_from_a_file_and_dotted_overrides(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "teacher.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "task": {"scale": 2}, "model": {"name": "edsr_tiny"}}))
    cfg = ExperimentConfig.from_dict({"methods": {"eco": {"teacher": {"train": str(path)}}}})
    teacher = cfg.methods["eco"].teacher
    assert teacher.kind == "train" and teacher.train["model"] == {"name": "edsr_tiny"}  # read in
    x3 = cfg.with_overrides({"task.scale": 3, "methods.eco.teacher.train.task.scale": 3})
    assert x3.methods["eco"].teacher.train["task"]["scale"] == 3


@pytest.mark.parametrize(
    "path",
    [
        "resweep/presets/eco_table1.yaml",
        "resweep/presets/eco_fig3.yaml",
        "resweep/presets/eco_fig4.yaml",
        "examples/eco_chain/one_file.yaml",
        "examples/eco_chain/eco_from_run.yaml",
    ],
)
def test_study_files_load(path: str) -> None:
    from resweep.study.spec import load_study

    root = Path(__file__).resolve().parents[1]
    for paper in (False, True):
        study = load_study(root / path, paper_schedule=paper)
        trials = study.trial_configs()
        configs = [study.experiment_for(t["params"], t["seed"]) for t in trials]
        assert any(c.methods["eco"].enabled for c in configs)
        assert all(not c.task.quantize_input for c in configs)
        for c in configs:  # every ECO trial's teacher has the trial's scale
            eco = c.methods["eco"]
            if eco.enabled and eco.teacher.kind == "train":
                assert eco.teacher.train["task"]["scale"] == c.task.scale


def test_tiled_teacher_pass_equals_whole_image() -> None:
    torch.manual_seed(0)
    model = create_model("edsr_tiny", scale=2).eval()  # receptive radius < 12 LR pixels
    lq = torch.rand(3, 70, 101)
    with torch.no_grad():
        whole = model(lq.unsqueeze(0)).squeeze(0)
        tiled = cache.teacher_forward(model, lq, 2, tile=32, overlap=24)
    assert tiled.shape == whole.shape
    assert (tiled - whole).abs().max() < 1e-5
