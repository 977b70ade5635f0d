"""Video data: clip folders and their errors, training windows, the demo clips, the task."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from resweep.config import ExperimentConfig, TaskConfig
from resweep.data.video import VideoWindowDataset, build_clip_eval_set
from resweep.data.video_clips import VideoSource, discover_clips
from resweep.data.video_demo import DEMO_CLIPS, demo_video_source
from resweep.degradations.tasks import build_task
from resweep.degradations.video_denoise import pack_window, unpack_window, window_indices
from resweep.errors import ConfigError, DataError

T = 5


def coded_frame(t: int, h: int = 40, w: int = 48) -> np.ndarray:
    """R = row, G = column, B = 10 * frame number: every pixel says where and when it is."""
    y, x = np.mgrid[0:h, 0:w]
    return np.stack([y, x, np.full_like(y, 10 * t)], axis=-1).astype(np.uint8)


def write_clip(folder: Path, frames: int, skip: tuple[int, ...] = (), **kw) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        if t not in skip:
            Image.fromarray(coded_frame(t, **kw)).save(folder / f"{t:04d}.png")
    return folder


def video_task(sigma: float = 0.0, **video) -> object:
    return build_task(TaskConfig(kind="video_denoise", scale=1, noise_sigma=sigma, video=video))


# --------------------------------------------------------------------------- windows
@pytest.mark.parametrize("augment", [False, True])
def test_temporal_windows_share_one_crop_and_keep_frame_order(tmp_path, augment):
    source = VideoSource("coded", discover_clips(write_clip(tmp_path / "a", 12)))
    ds = VideoWindowDataset(source, video_task(0.0), patch_size=16, augment=augment)
    assert len(ds) == 12 - T + 1
    seen_flips = set()
    for key in [(w, seed) for w in range(len(ds)) for seed in (3, 11, 2**40)]:
        sample = ds[key]
        frames, noise_map = unpack_window(sample["lq"].unsqueeze(0), T)
        frames = (frames[0] * 255).round()
        _, start = ds.window(key[0])
        assert sample["start"] == start
        for k in range(T):
            # the same crop (and flip) on every frame: R and G planes identical to frame 0's
            assert torch.equal(frames[k, :2], frames[0, :2])
            assert torch.all(frames[k, 2] == 10 * (start + k))  # frame order kept
        # the crop is a real window of the frame: R/G step by one along an axis
        rows = frames[0, 0]
        seen_flips.add(bool(rows[0, 0] > rows[-1, -1]))
        assert int(rows.max() - rows.min()) == 15 or int(frames[0, 1].max() - frames[0, 1].min()) == 15
        assert torch.all(noise_map == 0)
    if augment:
        assert seen_flips == {False, True}


def test_centre_frame_target_is_the_clean_centre_frame(tmp_path):
    source = VideoSource("coded", discover_clips(write_clip(tmp_path / "a", 9)))
    ds = VideoWindowDataset(source, video_task(25.0), patch_size=16, augment=True)
    for w in range(len(ds)):
        sample = ds[(w, 100 + w)]
        gt = (sample["gt"] * 255).round()
        assert gt.shape == (3, 16, 16)
        assert torch.all(gt[2] == 10 * (sample["start"] + T // 2))  # the centre frame ...
        frames, noise_map = unpack_window(sample["lq"].unsqueeze(0), T)
        # ... and clean: the noisy centre frame differs from it by the noise (sigma 25)
        residual = frames[0, T // 2] - sample["gt"]
        assert 0.06 < float(residual.std()) < 0.14
        assert torch.allclose(noise_map, torch.full_like(noise_map, 25 / 255))


def test_all_frames_target_stacks_the_window_in_order(tmp_path):
    source = VideoSource("coded", discover_clips(write_clip(tmp_path / "a", 7)))
    ds = VideoWindowDataset(source, video_task(0.0, target="all"), patch_size=8, augment=False)
    sample = ds[(1, 5)]
    gt = (sample["gt"] * 255).round().reshape(T, 3, 8, 8)
    assert [int(gt[k, 2, 0, 0]) for k in range(T)] == [10 * (1 + k) for k in range(T)]


def test_samples_depend_on_their_key_only(tmp_path):
    source = VideoSource("coded", discover_clips(write_clip(tmp_path / "a", 8)))
    ds = VideoWindowDataset(source, video_task(15.0), patch_size=16, augment=True)
    a, b, c = ds[(2, 77)], ds[(2, 77)], ds[(2, 78)]
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])
    assert not torch.equal(a["lq"], c["lq"])


def test_window_indices_mirror_at_clip_ends():
    assert window_indices(0, 5, 10) == [2, 1, 0, 1, 2]
    assert window_indices(9, 5, 10) == [7, 8, 9, 8, 7]
    assert window_indices(4, 5, 10) == [2, 3, 4, 5, 6]
    assert window_indices(0, 5, 2) == [1, 1, 0, 1, 0]  # mirrored, then clamped (2 frames)
    assert window_indices(0, 5, 1) == [0] * 5


# --------------------------------------------------------------------------- bad clips
def test_a_clip_with_a_missing_frame_is_refused_naming_the_frame(tmp_path):
    write_clip(tmp_path / "clip", 8, skip=(5,))
    with pytest.raises(DataError, match=r"frame 0005\.png is missing"):
        discover_clips(tmp_path / "clip")
    write_clip(tmp_path / "set" / "ok", 6)
    write_clip(tmp_path / "set" / "gappy", 8, skip=(2, 3))
    with pytest.raises(DataError, match=r"gappy.*frame 0002\.png is missing.*0002\.png, 0003\.png"):
        discover_clips(tmp_path / "set")


def test_a_clip_shorter_than_the_window_is_refused(tmp_path):
    write_clip(tmp_path / "set" / "long", 8)
    write_clip(tmp_path / "set" / "short", 3)
    source = VideoSource("set", discover_clips(tmp_path / "set"))
    with pytest.raises(DataError, match=r"short.*3 frame\(s\), fewer than the window of 5"):
        VideoWindowDataset(source, video_task(), patch_size=8, augment=False)


def test_frames_of_different_sizes_are_refused(tmp_path):
    folder = write_clip(tmp_path / "clip", 5)
    Image.fromarray(coded_frame(3, h=36)).save(folder / "0003.png")
    with pytest.raises(DataError, match=r"different sizes.*0003\.png is 36x48.*0000\.png is 40x48"):
        discover_clips(folder)


def test_unreadable_and_greyscale_frames_are_refused(tmp_path):
    folder = write_clip(tmp_path / "clip", 5)
    (folder / "0002.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError, match=r"cannot read image .*0002\.png"):
        discover_clips(folder)
    folder = write_clip(tmp_path / "grey", 5)
    Image.fromarray(coded_frame(4)[..., 0]).save(folder / "0004.png")
    with pytest.raises(DataError, match=r"0004\.png is greyscale"):
        discover_clips(folder)
    (tmp_path / "names").mkdir()
    write_clip(tmp_path / "names", 2)
    Image.fromarray(coded_frame(0)).save(tmp_path / "names" / "cover.png")
    with pytest.raises(DataError, match="not a number: cover.png"):
        discover_clips(tmp_path / "names")


def test_a_single_clip_folder_and_a_folder_of_clips(tmp_path):
    assert [c.name for c in discover_clips(write_clip(tmp_path / "solo", 5))] == ["solo"]
    write_clip(tmp_path / "set" / "b", 5)
    write_clip(tmp_path / "set" / "a", 6)
    clips = discover_clips(tmp_path / "set")
    assert [(c.name, len(c)) for c in clips] == [("a", 6), ("b", 5)]
    with pytest.raises(DataError, match="video folder not found"):
        discover_clips(tmp_path / "nowhere")


# --------------------------------------------------------------------------- demo clips
def test_demo_clips_move_by_their_known_camera_motion():
    source = demo_video_source("eval")
    assert [c.name for c in source.clips] == [m.photo.split(".")[0] for m in DEMO_CLIPS["eval"]]
    for clip in source.clips:
        dy, dx = clip.motion.dy, clip.motion.dx
        frames = clip.load_frames(list(range(len(clip))))
        h, w = clip.frame_hw
        for t in range(len(clip) - 1):
            # frame t+1 at (y, x) shows what frame t showed at (y + dy, x + dx)
            nxt = frames[t + 1][:, max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
            cur = frames[t][:, max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)]
            assert torch.equal(nxt, cur)
        assert not torch.equal(frames[0], frames[1])


# --------------------------------------------------------------------------- task
def test_sigma_range_is_drawn_once_per_clip_and_sets_the_noise():
    task = video_task(0.0, noise_sigma_range=(5.0, 50.0))
    task.config.quantize_input = False
    clean = torch.full((4, 3, 64, 64), 0.5, dtype=torch.float64)
    sigmas = []
    for seed in range(6):
        noisy, sigma = task.degrade_clip(clean, torch.Generator().manual_seed(seed))
        assert 5 / 255 <= sigma <= 50 / 255
        per_frame_std = (noisy - clean).flatten(1).std(dim=1)
        # one sigma for every frame of the clip (49152 draws per frame: std within ~1%)
        assert torch.allclose(per_frame_std, torch.full_like(per_frame_std, sigma), rtol=0.03)
        sigmas.append(sigma)
    assert len(set(sigmas)) == 6


def test_pack_and_unpack_are_inverse():
    frames = torch.rand(2, T, 3, 6, 7)
    packed = pack_window(frames, torch.tensor([0.1, 0.2]))
    assert packed.shape == (2, 3 * T + 1, 6, 7)
    back, noise_map = unpack_window(packed, T)
    assert torch.equal(back, frames)
    assert torch.allclose(noise_map[:, 0, 0, 0], torch.tensor([0.1, 0.2]))
    with pytest.raises(ValueError, match="packed window of 3 frames"):
        unpack_window(packed, 3)


def test_eval_clips_keep_their_first_frames_with_fixed_noise(tmp_path):
    write_clip(tmp_path / "set" / "a", 9)
    write_clip(tmp_path / "set" / "b", 6)
    from resweep.config import DatasetSpec

    spec = DatasetSpec(kind="video_folder", path=tmp_path / "set", max_frames=7)
    task = video_task(20.0)
    one = build_clip_eval_set(spec, task, seed=3)
    two = build_clip_eval_set(spec, task, seed=3)
    assert [(c.name, c.gt.shape[0]) for c in one.clips] == [("a", 7), ("b", 6)]
    assert one.clips[0].frame_names == [f"{t:04d}" for t in range(7)]
    assert torch.equal(one.clips[0].noisy, two.clips[0].noisy)
    assert not torch.equal(one.clips[0].noisy[:6], one.clips[1].noisy)


def test_eval_clips_take_the_fixed_eval_sigma_while_training_draws_from_the_range(tmp_path):
    """FastDVDnet's recipe: one network trained over sigma in [5, 55], evaluated at a given sigma."""
    write_clip(tmp_path / "set" / "a", 4)
    write_clip(tmp_path / "set" / "b", 4)
    from resweep.config import DatasetSpec

    spec = DatasetSpec(kind="video_folder", path=tmp_path / "set")
    task = video_task(0.0, noise_sigma_range=(5.0, 55.0), eval_noise_sigma=30.0)
    task.config.quantize_input = False
    for seed in range(3):
        for clip in build_clip_eval_set(spec, task, seed=seed).clips:
            assert clip.sigma == 30.0 / 255
            std = float((clip.noisy.double() - clip.gt.double()).std())
            assert abs(std - 30.0 / 255) < 0.05 * 30.0 / 255
    # training windows still draw their sigma from the range
    drawn = {task.degrade_clip(torch.full((2, 3, 8, 8), 0.5), torch.Generator().manual_seed(s))[1] for s in range(5)}
    assert len(drawn) == 5 and all(5 / 255 <= s <= 55 / 255 for s in drawn)
    # without eval_noise_sigma the evaluation keeps the training rule (a drawn sigma)
    ranged = video_task(0.0, noise_sigma_range=(5.0, 55.0))
    assert build_clip_eval_set(spec, ranged, seed=0).clips[0].sigma != 30.0 / 255


# --------------------------------------------------------------------------- config
def video_config(**changes) -> dict:
    data = {
        "task": {"kind": "video_denoise", "scale": 1, "noise_sigma": 30},
        "model": {"name": "fastdvdnet_tiny"},
        "data": {"train": {"kind": "video_demo", "split": "train"}, "patch_size": 32, "batch_size": 2},
        "train": {"iterations": 2, "log_every": 1, "device": "cpu"},
        "eval": {"every": 2, "max_side": 32, "sets": [{"kind": "video_demo", "split": "eval", "max_frames": 3}]},
    }
    for path, value in changes.items():
        node = data
        *parents, last = path.split(".")
        for p in parents:
            node = node[p]
        node[last] = value
    return data


def test_video_config_round_trips_and_rejects_mismatches(tmp_path):
    cfg = ExperimentConfig.from_dict(video_config(**{"task.video": {"noise_sigma_range": [10, 40]}}))
    cfg.save(tmp_path / "c.yaml")
    from resweep.config import load_config

    assert load_config(tmp_path / "c.yaml") == cfg
    with pytest.raises(ConfigError, match="num_frames must be odd"):
        ExperimentConfig.from_dict(video_config(**{"task.video": {"num_frames": 4}}))
    from resweep.data import build_train_dataset

    image_model = ExperimentConfig.from_dict(video_config(**{"model.name": "dncnn_tiny"}))
    with pytest.raises(ConfigError, match="restores single images") as err:
        build_train_dataset(image_model, build_task(image_model.task))
    assert err.value.field == "model.name"
    image_task = ExperimentConfig.from_dict(video_config(**{"task.kind": "denoise"}))
    with pytest.raises(ConfigError, match="video sets go with task kind 'video_denoise'"):
        build_train_dataset(image_task, build_task(image_task.task))
    image_data = ExperimentConfig.from_dict(video_config(**{"data.train": {"kind": "demo"}}))
    with pytest.raises(ConfigError, match="needs video sets") as err:
        build_train_dataset(image_data, build_task(image_data.task))
    assert err.value.field == "data.train.kind"
    target = ExperimentConfig.from_dict(video_config(**{"task.video": {"target": "all"}}))
    with pytest.raises(ConfigError, match="restores target 'centre'"):
        build_train_dataset(target, build_task(target.task))


def test_cached_frames_give_the_same_windows(tmp_path):
    write_clip(tmp_path / "set" / "a", 8)
    plain = VideoSource("set", discover_clips(tmp_path / "set"))
    cached = VideoSource("set", discover_clips(tmp_path / "set"))
    cached.set_cache()
    task = video_task(10.0)
    a = VideoWindowDataset(plain, task, patch_size=16, augment=True)
    b = VideoWindowDataset(cached, task, patch_size=16, augment=True)
    for key in [(w, 7 * w + 1) for w in range(len(a))] * 2:  # second pass reads the cache
        assert torch.equal(a[key]["lq"], b[key]["lq"]) and torch.equal(a[key]["gt"], b[key]["gt"])
    assert len(cached.clips[0]._cache) == 8


def test_the_shared_clips_open_as_a_video_set():
    from conftest import shared_dataset

    clips = discover_clips(shared_dataset("video"))
    assert [(c.name, len(c), c.frame_hw) for c in clips] == [
        ("bikes", 64, (272, 640)), ("carphone", 120, (144, 176))
    ]
    window = clips[1].load_crop([10, 11, 12], 5, 7, 32, 32)
    assert window.shape == (3, 3, 32, 32) and not torch.equal(window[0], window[2])
