"""Image reading, sources, patch stores, training patches and evaluation sets."""

from __future__ import annotations

import pickle
import shutil
import socket
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch
from PIL import Image

from resweep.config import DatasetSpec, ExperimentConfig, TaskConfig
from resweep.data import (
    DemoSource,
    FolderSource,
    PairedSource,
    PatchStoreSource,
    TrainPatchDataset,
    augment_aligned,
    build_eval_set,
    build_source,
    build_train_dataset,
    crop_aligned,
    image_size,
    list_images,
    prepare_patch_store,
    random_crop_params,
    read_image,
)
from resweep.data.patch_store import subimage_positions
from resweep.degradations.imresize import bicubic_downsample
from resweep.degradations.tasks import build_task
from resweep.errors import DataError

torch.set_num_threads(1)

DATASETS = Path("/work/shared/datasets")
needs_datasets = pytest.mark.skipif(not DATASETS.is_dir(), reason="shared datasets not available")


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth-plus-texture uint8 RGB image (H, W, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    smooth = np.stack([np.sin(yy / 7.0 + c) * np.cos(xx / 5.0 - c) for c in range(3)], axis=-1)
    img = 127.5 + 80 * smooth + rng.normal(0, 25, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _save(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _find(hr: torch.Tensor, gt: torch.Tensor, scale: int) -> tuple[int, int] | None:
    """LQ-grid position of ``gt`` inside ``hr`` (exact match), or None."""
    side = gt.shape[-1]
    for top in range(0, hr.shape[1] // scale - side // scale + 1):
        for left in range(0, hr.shape[2] // scale - side // scale + 1):
            y, x = top * scale, left * scale
            if torch.equal(hr[:, y : y + side, x : x + side], gt):
                return top, left
    return None


# --------------------------------------------------------------------------- images
def test_greyscale_palette_alpha_and_16bit_become_rgb(tmp_path: Path) -> None:
    grey = (np.arange(12 * 10).reshape(12, 10) * 2).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    img = read_image(tmp_path / "grey.png")
    assert img.shape == (3, 12, 10) and img.dtype == torch.float32
    assert torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])
    assert torch.allclose(img[0], torch.from_numpy(grey).float() / 255)

    Image.fromarray(_rgb(8, 9)).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(_rgb(8, 9)).convert("RGBA").save(tmp_path / "alpha.png")
    assert read_image(tmp_path / "palette.png").shape == (3, 8, 9)
    rgba = read_image(tmp_path / "alpha.png")
    assert torch.allclose(rgba, torch.from_numpy(_rgb(8, 9)).permute(2, 0, 1).float() / 255)

    g16 = (np.arange(6 * 7).reshape(6, 7) * 1500).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "deep.png")
    deep = read_image(tmp_path / "deep.png")
    assert deep.shape == (3, 6, 7)
    assert torch.allclose(deep[1], torch.from_numpy(g16.astype(np.float32)) / 65535, atol=1e-6)
    assert image_size(tmp_path / "palette.png") == (8, 9)


@needs_datasets
def test_single_channel_file_of_set14_reads_as_rgb() -> None:
    path = DATASETS / "CSet14" / "bridge.png"
    if not path.is_file():
        pytest.skip("CSet14/bridge.png missing")
    assert Image.open(path).mode == "L"
    img = read_image(path)
    assert img.shape[0] == 3 and torch.equal(img[0], img[2]) and torch.equal(img[0], img[1])
    assert image_size(path) == tuple(img.shape[1:])


def test_corrupted_and_truncated_files_raise_data_error_naming_them(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"this is not an image")
    with pytest.raises(DataError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")
    with pytest.raises(DataError, match=r"bad\.png"):
        image_size(tmp_path / "bad.png")
    good = _save(tmp_path / "good.png", _rgb(40, 40))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.png.*(truncated|Truncated|broken)"):
        read_image(tmp_path / "cut.png")
    with pytest.raises(DataError, match="file not found"):
        read_image(tmp_path / "nope.png")


def test_list_images_sorted_case_insensitive_and_errors(tmp_path: Path) -> None:
    for name in ("b.PNG", "a.jpg", "c.TIFF", "d.webp"):
        Image.fromarray(_rgb(4, 4)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "._a.jpg").write_bytes(b"resource fork")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.PNG", "c.TIFF", "d.webp"]
    with pytest.raises(DataError, match=r"not found: .*missing"):
        list_images(tmp_path / "missing")
    with pytest.raises(DataError, match=r"not a folder: .*notes\.txt"):
        list_images(tmp_path / "notes.txt")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no image files in .*empty.*png"):
        list_images(empty)
    with pytest.raises(DataError, match="empty"):
        FolderSource(empty)


# --------------------------------------------------------------------------- sources
def test_demo_source_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_network(*args, **kwargs):
        raise AssertionError("the demo source must not touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    train, evals = DemoSource("train"), DemoSource("eval")
    assert len(train) >= 6 and 2 <= len(evals) <= 3
    names = {train.image_name(i) for i in range(len(train))}
    assert names.isdisjoint(evals.image_name(i) for i in range(len(evals)))
    assert len(DemoSource("all")) == len(train) + len(evals)
    for src in (train, evals):
        for i in range(len(src)):
            img = src.load(i)
            assert img.shape[0] == 3 and img.dtype == torch.float32
            assert img.min() >= 0 and img.max() <= 1 and img.shape[1:] == src.image_hw(i)
    # colour photographs (not grey copied to RGB) on both sides
    assert (evals.load(0)[0] - evals.load(0)[1]).abs().max() > 0.1
    assert (train.load(0)[0] - train.load(0)[2]).abs().max() > 0.1
    img = evals.load(0)
    img.zero_()  # load returns a copy: the cache must survive
    assert evals.load(0).max() > 0


def test_paired_source_matching_and_errors(tmp_path: Path) -> None:
    gt_dir, lq_dir = tmp_path / "gt", tmp_path / "lq"
    _save(gt_dir / "a.png", _rgb(20, 24, 1))
    _save(gt_dir / "b.png", _rgb(17, 16, 2))  # one extra row: mod-cropped to 16x16
    _save(lq_dir / "ax2.png", _rgb(10, 12, 3))  # DIV2K-style suffix
    _save(lq_dir / "b.png", _rgb(8, 8, 4))
    src = PairedSource(lq_dir, gt_dir)
    assert src.scale == 2 and len(src) == 2
    assert [src.image_name(i) for i in range(2)] == ["a", "b"]
    lq, gt = src.load_pair(1)
    assert lq.shape == (3, 8, 8) and gt.shape == (3, 16, 16)
    assert src.load(0).shape == (3, 20, 24)

    _save(lq_dir / "c.png", _rgb(5, 5))
    _save(gt_dir / "d.png", _rgb(10, 10))
    with pytest.raises(DataError, match=r"LQ without GT.*c\.png.*GT without LQ.*d\.png"):
        PairedSource(lq_dir, gt_dir)
    (lq_dir / "c.png").unlink()
    (gt_dir / "d.png").unlink()

    _save(lq_dir / "b.png", _rgb(8, 7, 4))  # 8x7 LQ vs 17x16 GT at x2
    with pytest.raises(DataError, match=r"size mismatch for pair 'b'.*b\.png.*expected GT 16x14"):
        PairedSource(lq_dir, gt_dir, scale=2)
    with pytest.raises(DataError, match="size mismatch"):
        PairedSource(lq_dir, gt_dir, scale=3)


def test_build_source_kinds(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "x.png", _rgb(30, 30))
    _save(tmp_path / "imgs" / "y.png", _rgb(30, 30))
    src = build_source(DatasetSpec(kind="folder", path=tmp_path / "imgs", max_images=1))
    assert isinstance(src, FolderSource) and len(src) == 1 and src.name == "imgs"
    demo = build_source(DatasetSpec(kind="demo", split="eval"))
    assert isinstance(demo, DemoSource) and demo.name == "demo-eval"


# --------------------------------------------------------------------------- patch store
def test_patch_store_round_trip_memory_mapped(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    files = [
        _save(folder / "big.png", _rgb(70, 101, 1)),
        _save(folder / "small.jpg", _rgb(30, 20, 2)),  # smaller than sub_size: stored whole
        _save(folder / "wide.png", _rgb(40, 90, 3)),
    ]
    store = prepare_patch_store(
        folder, tmp_path / "out" / "store.arrow", sub_size=48, stride=24, progress=False
    )
    assert store.is_file() and list(store.parent.iterdir()) == [store]  # no temp file left

    before = pa.total_allocated_bytes()
    src = PatchStoreSource(store)
    expected = []
    for path in sorted(files):
        img = read_image(path)
        _, h, w = img.shape
        for y in subimage_positions(h, 48, 24):
            for x in subimage_positions(w, 48, 24):
                expected.append((path.name, y, x, img[:, y : y + 48, x : x + 48]))
    assert len(src) == len(expected) == 2 * 4 + 1 + 1 * 3
    pixel_bytes = 0
    for i, (name, y, x, crop) in enumerate(expected):
        got = src.load(i)
        assert got.dtype == torch.float32 and torch.equal(got, crop), (name, y, x)
        assert src.reader.images[i] == name and (src.reader.ys[i], src.reader.xs[i]) == (y, x)
        assert src.image_hw(i) == tuple(crop.shape[1:])
        pixel_bytes += crop.numel()
    assert subimage_positions(101, 48, 24) == [0, 24, 48, 53]
    # zero-copy: pixel data are views on the memory map, not buffers in Arrow's memory pool
    assert isinstance(src.reader._mmap, pa.MemoryMappedFile)
    assert pa.total_allocated_bytes() - before < pixel_bytes // 4
    view = src.reader.pixels(0)
    assert view.dtype == np.uint8 and not view.flags.writeable and not view.flags.owndata
    crop = src.load_crop(0, 5, 7, 10, 11)
    assert torch.equal(crop, expected[0][3][:, 5:15, 7:18])

    # picklable for DataLoader workers / Ray: re-opens the map lazily
    clone = pickle.loads(pickle.dumps(src))
    assert clone.reader._data is None and torch.equal(clone.load(3), src.load(3))

    # min_size skips images too small to give a training crop
    store2 = prepare_patch_store(
        folder, tmp_path / "s2.arrow", sub_size=48, stride=24, min_size=35, progress=False
    )
    assert len(PatchStoreSource(store2)) == 2 * 4 + 1 * 3


def test_corrupt_or_truncated_patch_store_raises(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "a.png", _rgb(60, 60))
    store = prepare_patch_store(
        tmp_path / "imgs", tmp_path / "s.arrow", sub_size=32, stride=16, progress=False
    )
    data = store.read_bytes()
    cut = tmp_path / "cut.arrow"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(DataError, match=r"cut\.arrow"):
        PatchStoreSource(cut)
    junk = tmp_path / "junk.arrow"
    junk.write_bytes(b"\x00" * 1000)
    with pytest.raises(DataError, match=r"junk\.arrow"):
        PatchStoreSource(junk)
    with pytest.raises(DataError, match=r"not found: .*missing\.arrow"):
        PatchStoreSource(tmp_path / "missing.arrow")


# --------------------------------------------------------------------------- training patches
def test_too_small_image_raises_naming_the_file(tmp_path: Path) -> None:
    _save(tmp_path / "ok.png", _rgb(40, 40))
    _save(tmp_path / "tiny.png", _rgb(21, 50))
    task = build_task(TaskConfig(kind="sr", scale=2))
    with pytest.raises(DataError, match=r"tiny\.png \(21x50 -> LQ 10x25\)") as info:
        TrainPatchDataset(FolderSource(tmp_path), task, patch_size=12, augment=False)
    assert "ok.png" not in str(info.value)
    TrainPatchDataset(FolderSource(tmp_path), task, patch_size=10, augment=False)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_on_the_fly_patch_equals_crop_of_full_degradation(tmp_path: Path, scale: int) -> None:
    _save(tmp_path / "img.png", _rgb(23 * scale + 1, 19 * scale + 1, scale))  # not mod-scale
    task = build_task(TaskConfig(kind="sr", scale=scale, quantize_input=False))
    p = 8
    ds = TrainPatchDataset(FolderSource(tmp_path), task, patch_size=p, augment=False)
    hr = read_image(tmp_path / "img.png")[:, : 23 * scale, : 19 * scale]
    full_lq = bicubic_downsample(hr, scale)
    assert torch.equal(ds.full_pair(0)["lq"], full_lq) and torch.equal(ds.full_pair(0)["gt"], hr)
    seen = set()
    for seed in range(12):
        sample = ds[(0, seed)]
        assert sample["lq"].shape == (3, p, p) and sample["gt"].shape == (3, p * scale, p * scale)
        pos = _find(hr, sample["gt"], scale)
        assert pos is not None
        top, left = pos
        seen.add(pos)
        assert (sample["lq"] - full_lq[:, top : top + p, left : left + p]).abs().max() < 1e-6
        # alignment: downsampling the GT patch alone gives the LQ patch away from its borders
        own = bicubic_downsample(sample["gt"], scale)
        assert (own - sample["lq"])[:, 2:-2, 2:-2].abs().max() < 1e-5
    assert len(seen) > 6


def test_augmentation_keeps_alignment_and_keys_are_deterministic(tmp_path: Path) -> None:
    _save(tmp_path / "img.png", _rgb(64, 56, 7))
    task = build_task(TaskConfig(kind="sr", scale=2, quantize_input=False))
    ds = TrainPatchDataset(FolderSource(tmp_path), task, patch_size=10, augment=True)
    hr = read_image(tmp_path / "img.png")
    not_plain = 0
    for seed in range(16):
        sample = ds[(0, seed)]
        own = bicubic_downsample(sample["gt"], 2)
        assert (own - sample["lq"])[:, 2:-2, 2:-2].abs().max() < 1e-5
        not_plain += _find(hr, sample["gt"], 2) is None
    assert not_plain >= 8  # flips/rotations did happen
    a, b, c = ds[(0, 3)], ds[(0, 3)], ds[(0, 4)]
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"]) and a["index"] == 0
    assert not torch.equal(a["gt"], c["gt"])

    # noisy task: same key, same noise; new key, new noise
    noisy = TrainPatchDataset(
        FolderSource(tmp_path), build_task(TaskConfig(kind="denoise", scale=1)), 16, True
    )
    assert torch.equal(noisy[(0, 9)]["lq"], noisy[(0, 9)]["lq"])
    assert not torch.equal(noisy[(0, 9)]["lq"], noisy[(0, 10)]["lq"])
    x, y = noisy[(0, 9)], noisy[(0, 9)]
    assert (x["lq"] - x["gt"]).std() > 0.05 and torch.equal(x["gt"], y["gt"])


def test_crop_and_augment_helpers_keep_extra_tensors_aligned() -> None:
    g = torch.Generator().manual_seed(0)
    lq = torch.arange(2 * 12 * 12, dtype=torch.float32).reshape(2, 12, 12)
    gt = lq.repeat_interleave(3, dim=1).repeat_interleave(3, dim=2)  # nearest x3 of lq
    top, left = random_crop_params((12, 12), 5, g)
    crops = crop_aligned({"lq": (lq, 1), "gt": (gt, 3), "extra": (gt * 2, 3)}, top, left, 5)
    assert torch.equal(crops["lq"], lq[:, top : top + 5, left : left + 5])
    for seed in range(8):
        out = augment_aligned(crops, torch.Generator().manual_seed(seed))
        assert torch.equal(out["gt"][:, ::3, ::3], out["lq"]) and torch.equal(
            out["extra"], 2 * out["gt"]
        )
    with pytest.raises(ValueError, match="too small"):
        crop_aligned({"gt": (gt[:, :10], 3)}, 0, 0, 5)


def test_paired_dataset_crops_stored_pairs_aligned(tmp_path: Path) -> None:
    gt_np = _rgb(48, 40, 5)
    _save(tmp_path / "gt" / "p.png", gt_np)
    lq_np = np.asarray(Image.fromarray(gt_np).resize((20, 24), Image.BICUBIC))
    _save(tmp_path / "lq" / "p.png", lq_np)
    task = build_task(TaskConfig(kind="sr", scale=2))
    src = PairedSource(tmp_path / "lq", tmp_path / "gt", scale=2)
    ds = TrainPatchDataset(src, task, patch_size=8, augment=False)
    lq_full, gt_full = read_image(tmp_path / "lq" / "p.png"), read_image(tmp_path / "gt" / "p.png")
    for seed in range(5):
        s = ds[(0, seed)]
        top, left = _find(gt_full, s["gt"], 2)
        assert torch.equal(s["lq"], lq_full[:, top : top + 8, left : left + 8])
    with pytest.raises(DataError, match="scale"):
        TrainPatchDataset(src, build_task(TaskConfig(kind="sr", scale=4)), 4, False)


def test_patch_store_dataset_matches_folder_dataset(tmp_path: Path) -> None:
    _save(tmp_path / "imgs" / "a.png", _rgb(40, 40, 1))  # one sub-image of 40x40 each
    _save(tmp_path / "imgs" / "b.png", _rgb(40, 40, 2))
    store = prepare_patch_store(
        tmp_path / "imgs", tmp_path / "s.arrow", sub_size=64, stride=32, progress=False
    )
    task = build_task(TaskConfig(kind="denoise_sr", scale=2))
    a = TrainPatchDataset(PatchStoreSource(store), task, 12, True)
    b = TrainPatchDataset(FolderSource(tmp_path / "imgs"), task, 12, True)
    for key in [(0, 1), (1, 2), (1, 99)]:
        assert torch.equal(a[key]["lq"], b[key]["lq"]) and torch.equal(a[key]["gt"], b[key]["gt"])
    with pytest.raises(DataError, match=r"s\.arrow row 0 \(a\.png"):
        TrainPatchDataset(PatchStoreSource(store), task, 24, True)


@needs_datasets
def test_real_jpeg_folder_patches(tmp_path: Path) -> None:
    src_dir = DATASETS / "CBSD432"
    files = sorted(src_dir.glob("*.jpg"))[:2]
    if len(files) < 2:
        pytest.skip("CBSD432 missing")
    for f in files:
        shutil.copy(f, tmp_path / f.name)
    task = build_task(TaskConfig(kind="sr", scale=4))
    ds = TrainPatchDataset(FolderSource(tmp_path), task, 48, True)
    s = ds[(1, 5)]
    assert s["lq"].shape == (3, 48, 48) and s["gt"].shape == (3, 192, 192) and s["index"] == 1
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=2, sampler=[(0, 1), (1, 2)])))
    assert batch["lq"].shape == (2, 3, 48, 48) and batch["index"].tolist() == [0, 1]


def test_build_train_dataset_from_config() -> None:
    cfg = ExperimentConfig.from_dict(
        {"task": {"kind": "sr", "scale": 4}, "data": {"patch_size": 24}}
    )
    ds = build_train_dataset(cfg, build_task(cfg.task))
    assert len(ds) == len(DemoSource("train"))
    s = ds[(2, 0)]
    assert s["lq"].shape == (3, 24, 24) and s["gt"].shape == (3, 96, 96)


# --------------------------------------------------------------------------- evaluation
def test_eval_set_is_fixed_per_seed_and_cropped(tmp_path: Path) -> None:
    _save(tmp_path / "e" / "one.png", _rgb(50, 61, 1))
    _save(tmp_path / "e" / "two.png", _rgb(33, 30, 2))
    spec = DatasetSpec(kind="folder", path=tmp_path / "e")
    task = build_task(TaskConfig(kind="denoise_sr", scale=3))
    a = build_eval_set(spec, task, seed=1)
    b = build_eval_set(spec, task, seed=1)
    c = build_eval_set(spec, task, seed=2)
    assert a.name == "e" and [it.image_name for it in a] == ["one", "two"]
    name, lq, gt = a.items[0]
    assert gt.shape == (3, 48, 60) and lq.shape == (3, 16, 20)
    assert all(torch.equal(x.lq, y.lq) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a.items[0].lq, c.items[0].lq)
    cropped = build_eval_set(spec, task, seed=1, max_side=32)
    assert cropped.items[0].gt.shape == (3, 30, 30) and cropped.items[0].lq.shape == (3, 10, 10)
    assert cropped.items[1].gt.shape == (3, 30, 30)

    # paired sources: stored LQ used as is, centre crop aligned
    _save(tmp_path / "pg" / "k.png", _rgb(40, 44, 3))
    _save(tmp_path / "pl" / "k.png", _rgb(20, 22, 4))
    pspec = DatasetSpec(kind="paired", lq_path=tmp_path / "pl", gt_path=tmp_path / "pg")
    paired = build_eval_set(pspec, build_task(TaskConfig(kind="sr", scale=2)), seed=0, max_side=16)
    _, plq, pgt = paired.items[0]
    assert plq.shape == (3, 8, 8) and pgt.shape == (3, 16, 16)
    full_lq = read_image(tmp_path / "pl" / "k.png")
    assert torch.equal(plq, full_lq[:, 6:14, 7:15])
    assert torch.equal(pgt, read_image(tmp_path / "pg" / "k.png")[:, 12:28, 14:30])
