"""Video clips: frame sequences on disk (``0000.png, 0001.png, ...``) checked once when opened.

A video set is a folder of clip folders, or a single clip folder (a folder whose own files are
frames). Opening a clip reads only the frame headers, and refuses what would silently give
wrong training data, naming the file: a gap in the numbering (the missing frame's name), a
frame that is not a number, two files with the same number, frames of different sizes, a
greyscale frame in a colour clip, an unreadable frame. Pixels are decoded on use, as
``(3, H, W)`` float32 in [0, 1] by the same reader as the image sets
(:func:`resweep.data.images.read_image`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from resweep.data.images import IMAGE_EXTENSIONS, image_size, read_image
from resweep.errors import DataError

__all__ = ["Clip", "ClipFolder", "VideoSource", "discover_clips"]

# Frames decoded once per process are kept as uint8 up to this many bytes per clip set.
DEFAULT_CACHE_BYTES = 512 * 2**20
_GREY_MODES = frozenset({"L", "LA", "1", "I", "I;16", "I;16L", "I;16B", "I;16N", "F"})


class Clip:
    """Base class: ``name``, ``len()`` frames of size ``frame_hw``, ``frame_name(i)``,
    ``load_frames(indices) -> (len(indices), 3, H, W)``."""

    name: str = "clip"
    frame_hw: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        raise NotImplementedError

    def frame_name(self, i: int) -> str:
        return f"{i:04d}"

    def describe(self) -> str:
        return f"clip '{self.name}'"

    def load_frames(self, indices: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def load_crop(self, indices: list[int], top: int, left: int, height: int, width: int) -> torch.Tensor:
        """``load_frames(indices)[:, :, top:top+height, left:left+width]``."""
        return self.load_frames(indices)[:, :, top : top + height, left : left + width]


class ClipFolder(Clip):
    """The frames of one folder, numbered without gaps (any start, any zero padding)."""

    def __init__(self, folder: str | os.PathLike[str], name: str | None = None) -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.files = _numbered_frames(self.folder)
        self.frame_hw = _check_frames(self.files)
        self._cache: dict[int, np.ndarray] = {}
        self.cache_bytes = 0  # set by VideoSource: 0 = decode every time

    def __len__(self) -> int:
        return len(self.files)

    def frame_name(self, i: int) -> str:
        return self.files[i].stem

    def describe(self) -> str:
        return f"clip folder {self.folder}"

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": {}}  # workers decode their own frames

    def load_crop(self, indices: list[int], top: int, left: int, height: int, width: int) -> torch.Tensor:
        if all(i in self._cache for i in indices):
            # crop the cached uint8 frames first: only the crop is converted to float
            crops = [self._cache[i][:, top : top + height, left : left + width] for i in indices]
            return torch.from_numpy(np.stack(crops)).to(torch.float32).div_(255.0)
        return super().load_crop(indices, top, left, height, width)

    def load_frames(self, indices: list[int]) -> torch.Tensor:
        frames = []
        for i in indices:
            cached = self._cache.get(i)
            if cached is not None:
                frames.append(torch.from_numpy(cached).to(torch.float32).div_(255.0))
                continue
            frame = read_image(self.files[i])
            if tuple(frame.shape[-2:]) != self.frame_hw:  # the file changed since the check
                raise DataError(
                    f"frame {self.files[i]} is {frame.shape[-2]}x{frame.shape[-1]}, the clip's "
                    f"frames are {self.frame_hw[0]}x{self.frame_hw[1]}"
                )
            nbytes = frame.numel()
            if self.cache_bytes and (len(self._cache) + 1) * nbytes <= self.cache_bytes:
                self._cache[i] = frame.mul(255.0).round_().to(torch.uint8).numpy()
            frames.append(frame)
        return torch.stack(frames)


def _numbered_frames(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"clip folder not found: {folder} (expected a folder of frames 0000.png, ...)")
    files = [
        p for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_EXTENSIONS
    ]
    if not files:
        raise DataError(f"no frames in clip folder {folder} (expected 0000.png, 0001.png, ...)")
    not_numbers = sorted(p.name for p in files if not p.stem.isdigit())
    if not_numbers:
        raise DataError(
            f"clip folder {folder}: frame file names must be frame numbers (0000.png, ...); "
            f"not a number: {', '.join(not_numbers[:5])}"
            + (f" ... ({len(not_numbers)} in all)" if len(not_numbers) > 5 else "")
        )
    by_number: dict[int, Path] = {}
    for p in sorted(files):
        n = int(p.stem)
        if n in by_number:
            raise DataError(
                f"clip folder {folder}: two files for frame {n}: {by_number[n].name} and {p.name}"
            )
        by_number[n] = p
    first, last = min(by_number), max(by_number)
    missing = [n for n in range(first, last + 1) if n not in by_number]
    if missing:
        width = len(by_number[first].stem)
        ext = by_number[first].suffix
        names = [f"{n:0{width}d}{ext}" for n in missing]
        raise DataError(
            f"clip folder {folder}: frame {names[0]} is missing (the numbering has a gap between "
            f"{by_number[first].name} and {by_number[last].name}"
            + (f"; {len(names)} frames missing in all: {', '.join(names[:10])}" if len(names) > 1 else "")
            + ")"
        )
    return [by_number[n] for n in range(first, last + 1)]


def _check_frames(files: list[Path]) -> tuple[int, int]:
    """One frame size and one colour mode for the whole clip (headers only)."""
    hw0 = image_size(files[0])
    grey0 = _is_grey(files[0])
    for p in files[1:]:
        hw = image_size(p)
        if hw != hw0:
            raise DataError(
                f"frames of different sizes in clip {p.parent}: {p.name} is {hw[0]}x{hw[1]}, "
                f"{files[0].name} is {hw0[0]}x{hw0[1]}"
            )
        if _is_grey(p) != grey0:
            which = "greyscale" if not grey0 else "colour"
            other = "colour" if not grey0 else "greyscale"
            raise DataError(
                f"clip {p.parent}: frame {p.name} is {which} while {files[0].name} is {other}; "
                "a clip's frames must all be colour or all greyscale"
            )
    return hw0


def _is_grey(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            return img.mode in _GREY_MODES
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


def discover_clips(folder: str | os.PathLike[str]) -> list[ClipFolder]:
    """The clips of a video folder: the folder itself if it holds frames, else every
    (non-hidden) sub-folder, sorted by name; a sub-folder without frames is an error."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(
            f"video folder not found: {folder} (expected a folder of clip folders of frames, "
            "or one clip folder)"
        )
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    if any(p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS for p in entries):
        return [ClipFolder(folder)]
    subfolders = sorted(p for p in entries if p.is_dir())
    if not subfolders:
        raise DataError(
            f"no frames and no clip folders in {folder} (expected clip folders holding "
            "0000.png, 0001.png, ..., or those frames directly)"
        )
    return [ClipFolder(p) for p in subfolders]


class VideoSource:
    """A named list of clips (folder clips or the demo clips)."""

    def __init__(self, name: str, clips: list[Clip]) -> None:
        if not clips:
            raise DataError(f"video set {name} has no clips")
        self.name = name
        self.clips = clips

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> Clip:
        return self.clips[i]

    def set_cache(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        """Keep decoded frames (uint8) of folder clips up to ``max_bytes`` per clip."""
        for clip in self.clips:
            if isinstance(clip, ClipFolder):
                clip.cache_bytes = max_bytes

    def __repr__(self) -> str:
        return f"VideoSource(name={self.name!r}, clips={[len(c) for c in self.clips]})"
