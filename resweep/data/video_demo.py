"""Demo clips made from scikit-image's still photographs by a known camera motion.

Frame ``t`` of a demo clip is the ``frame_hw`` window of the photograph at
``(top + t * dy, left + t * dx)``: a camera panning at a constant whole-pixel velocity, so
frame ``t + 1`` equals frame ``t`` shifted by ``(dy, dx)`` where both see the scene (the
tests use this). Nothing is downloaded: the photographs ship in the scikit-image wheel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from resweep.data.images import read_image
from resweep.data.sources import _skimage_data_dir
from resweep.data.video_clips import Clip, VideoSource
from resweep.errors import DataError

__all__ = ["DEMO_CLIPS", "DemoClip", "DemoMotion", "demo_video_source"]


@dataclass(frozen=True)
class DemoMotion:
    """Start ``(top, left)`` and whole-pixel velocity ``(dy, dx)`` per frame."""

    photo: str
    top: int
    left: int
    dy: int
    dx: int


# Train and eval clips come from different photographs (as the image demo's splits).
DEMO_CLIPS: dict[str, tuple[DemoMotion, ...]] = {
    "train": (
        DemoMotion("rocket.jpg", 40, 60, 1, 3),
        DemoMotion("motorcycle_left.png", 100, 80, -2, 2),
        DemoMotion("retina.jpg", 500, 400, 2, -1),
    ),
    "eval": (
        DemoMotion("astronaut.png", 60, 40, 1, 2),
        DemoMotion("coffee.png", 120, 150, -1, -2),
    ),
}
DEMO_FRAMES = 16
DEMO_FRAME_HW = (96, 128)


class DemoClip(Clip):
    """One pan over a photograph, generated in memory (a few MB)."""

    def __init__(self, photo: torch.Tensor, motion: DemoMotion, num_frames: int,
                 frame_hw: tuple[int, int], name: str) -> None:
        h, w = frame_hw
        ys = [motion.top + t * motion.dy for t in range(num_frames)]
        xs = [motion.left + t * motion.dx for t in range(num_frames)]
        ph, pw = photo.shape[-2:]
        if min(ys) < 0 or min(xs) < 0 or max(ys) + h > ph or max(xs) + w > pw:
            raise DataError(
                f"demo clip {name}: the pan leaves the photograph {motion.photo} ({ph}x{pw})"
            )
        self.name = name
        self.motion = motion
        self.frame_hw = (h, w)
        self.frames = torch.stack([photo[:, y : y + h, x : x + w] for y, x in zip(ys, xs, strict=True)])

    def __len__(self) -> int:
        return int(self.frames.shape[0])

    def describe(self) -> str:
        return f"demo clip '{self.name}' (a pan over {self.motion.photo})"

    def load_frames(self, indices: list[int]) -> torch.Tensor:
        return self.frames[indices].clone()

    def load_crop(self, indices: list[int], top: int, left: int, height: int, width: int) -> torch.Tensor:
        return self.frames[indices, :, top : top + height, left : left + width].clone()


def demo_video_source(
    split: Literal["train", "eval", "all"] = "all",
    num_frames: int = DEMO_FRAMES,
    frame_hw: tuple[int, int] = DEMO_FRAME_HW,
    name: str | None = None,
) -> VideoSource:
    """The demo clips of ``split`` (``all``: train then eval)."""
    if split not in ("train", "eval", "all"):
        raise ValueError(f"demo split must be 'train', 'eval' or 'all', got {split!r}")
    motions = DEMO_CLIPS["train"] + DEMO_CLIPS["eval"] if split == "all" else DEMO_CLIPS[split]
    folder = _skimage_data_dir()
    clips: list[Clip] = []
    for m in motions:
        path = folder / m.photo
        if not path.is_file():
            raise DataError(f"scikit-image's data folder {folder} lacks {m.photo}; reinstall scikit-image")
        clips.append(DemoClip(read_image(path), m, num_frames, frame_hw, name=path.stem))
    default = "video-demo" if split == "all" else f"video-demo-{split}"
    return VideoSource(name or default, clips)
