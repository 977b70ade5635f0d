"""Image sources: indexable collections of clean images (and, for paired sets, their LQ).

Every source has ``name``, ``len()``, ``image_name(i)``, ``load(i) -> (3, H, W)`` float32 in
[0, 1], plus ``image_hw(i)`` (size without decoding, for early checks), ``describe(i)`` (what
to name in an error message) and ``load_crop`` (sources that can crop cheaply override it).
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch

from resweep.data.images import image_size, list_images, read_image
from resweep.data.patch_store import PatchStoreReader
from resweep.errors import DataError

if TYPE_CHECKING:
    # Annotations only: resweep.config imports the methods package, which may import us.
    from resweep.config import DatasetSpec

__all__ = [
    "DEMO_EVAL",
    "DEMO_TRAIN",
    "DemoSource",
    "FolderSource",
    "ImageSource",
    "PairedSource",
    "PatchStoreSource",
    "build_source",
]


class ImageSource:
    """Base class of image sources."""

    name: str = "images"

    def __len__(self) -> int:
        raise NotImplementedError

    def image_name(self, i: int) -> str:
        raise NotImplementedError

    def load(self, i: int) -> torch.Tensor:
        raise NotImplementedError

    def image_hw(self, i: int) -> tuple[int, int]:
        """``(H, W)`` of image ``i`` without decoding it where the source allows."""
        return tuple(self.load(i).shape[-2:])  # type: ignore[return-value]

    def describe(self, i: int) -> str:
        """Where image ``i`` comes from (a file path where there is one), for messages."""
        return f"{self.name}/{self.image_name(i)}"

    def load_crop(self, i: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
        """``load(i)[:, top:top+height, left:left+width]``."""
        return self.load(i)[:, top : top + height, left : left + width]

    def _check(self, i: int) -> int:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"image index {i} out of range for {self.name} ({n} images)")
        return i % n

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, images={len(self)})"


# --------------------------------------------------------------------------- folder
class FolderSource(ImageSource):
    """The image files of a folder, sorted by name; ``max_images`` keeps the first N."""

    def __init__(
        self,
        folder: str | os.PathLike[str],
        max_images: int | None = None,
        name: str | None = None,
    ) -> None:
        self.folder = Path(folder)
        self.files = list_images(self.folder)[:max_images]
        self.name = name or self.folder.name
        self._sizes: dict[int, tuple[int, int]] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image_name(self, i: int) -> str:
        return self.files[self._check(i)].stem

    def describe(self, i: int) -> str:
        return str(self.files[self._check(i)])

    def image_hw(self, i: int) -> tuple[int, int]:
        i = self._check(i)
        if i not in self._sizes:
            self._sizes[i] = image_size(self.files[i])
        return self._sizes[i]

    def load(self, i: int) -> torch.Tensor:
        return read_image(self.files[self._check(i)])


# --------------------------------------------------------------------------- demo
# Colour photographs bundled in the scikit-image wheel (its data folder), read directly so
# nothing goes through pooch or the network. Train and eval sets are disjoint scenes; the
# motorcycle stereo pair stays on the training side. Grey ones become RGB (3 equal channels).
DEMO_TRAIN: tuple[str, ...] = (
    "rocket.jpg",
    "ihc.png",  # immunohistochemistry
    "hubble_deep_field.jpg",
    "motorcycle_left.png",
    "motorcycle_right.png",
    "retina.jpg",
    "camera.png",  # grey
    "brick.png",  # grey texture
    "gravel.png",  # grey texture
)
DEMO_EVAL: tuple[str, ...] = ("astronaut.png", "chelsea.png", "coffee.png")


def _skimage_data_dir() -> Path:
    # find_spec("skimage") locates the package without importing it (skimage is slow to import).
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the demo data set needs scikit-image, which is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


class DemoSource(ImageSource):
    """Photographs bundled with scikit-image: ``split`` is 'train', 'eval' or 'all'.

    Decoded images are cached in memory (a few MB): the demo set is meant for quick runs.
    """

    def __init__(
        self,
        split: Literal["train", "eval", "all"] = "all",
        max_images: int | None = None,
        name: str | None = None,
    ) -> None:
        if split not in ("train", "eval", "all"):
            raise ValueError(f"demo split must be 'train', 'eval' or 'all', got {split!r}")
        names = {"train": DEMO_TRAIN, "eval": DEMO_EVAL, "all": DEMO_TRAIN + DEMO_EVAL}[split]
        folder = _skimage_data_dir()
        self.files = [folder / n for n in names][:max_images]
        missing = [p.name for p in self.files if not p.is_file()]
        if missing:
            raise DataError(
                f"scikit-image's bundled data folder {folder} lacks demo image(s) {missing}; "
                "reinstall scikit-image"
            )
        self.split = split
        self.name = name or ("demo" if split == "all" else f"demo-{split}")
        self._cache: dict[int, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.files)

    def image_name(self, i: int) -> str:
        return self.files[self._check(i)].stem

    def describe(self, i: int) -> str:
        return f"demo image {self.files[self._check(i)]}"

    def image_hw(self, i: int) -> tuple[int, int]:
        i = self._check(i)
        if i in self._cache:
            return tuple(self._cache[i].shape[-2:])  # type: ignore[return-value]
        return image_size(self.files[i])

    def __getstate__(self) -> dict:
        # Shipping decoded pixels to workers / Ray costs more than decoding them there.
        return {**self.__dict__, "_cache": {}}

    def _cached(self, i: int) -> torch.Tensor:
        i = self._check(i)
        if i not in self._cache:
            self._cache[i] = read_image(self.files[i])
        return self._cache[i]

    def load(self, i: int) -> torch.Tensor:
        return self._cached(i).clone()  # callers may modify it; the cache must not change

    def load_crop(self, i: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
        return self._cached(i)[:, top : top + height, left : left + width].clone()


# --------------------------------------------------------------------------- paired
_SCALE_SUFFIX = re.compile(r"[_-]?x\d+$", re.IGNORECASE)


def _by_stem(files: list[Path], folder: Path) -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in files:
        if path.stem in out:
            raise DataError(
                f"two images named '{path.stem}' in {folder} ({out[path.stem].name}, {path.name}); "
                "pairs are matched by file name without extension"
            )
        out[path.stem] = path
    return out


def _names(names: list[str], limit: int = 10) -> str:
    return ", ".join(names[:limit]) + (f" ... ({len(names)} in all)" if len(names) > limit else "")


class PairedSource(ImageSource):
    """Stored LQ/GT pairs, matched by file stem (an LQ suffix such as ``x2``/``_x4`` is ignored,
    as in DIV2K's ``0001x2.png``).

    GT must be LQ x ``scale`` (inferred from the first pair when not given); a GT with up to
    ``scale - 1`` extra rows/columns is accepted and mod-cropped, as benchmark GTs often are.
    ``load(i)`` returns the (mod-cropped) GT, ``load_pair(i)`` both.
    """

    def __init__(
        self,
        lq_folder: str | os.PathLike[str],
        gt_folder: str | os.PathLike[str],
        scale: int | None = None,
        max_images: int | None = None,
        name: str | None = None,
    ) -> None:
        self.lq_folder, self.gt_folder = Path(lq_folder), Path(gt_folder)
        lq = _by_stem(list_images(self.lq_folder), self.lq_folder)
        gt = _by_stem(list_images(self.gt_folder), self.gt_folder)
        pairs: list[tuple[str, Path, Path]] = []
        unmatched_lq: list[str] = []
        for stem, lq_path in sorted(lq.items()):
            key = stem if stem in gt else _SCALE_SUFFIX.sub("", stem)
            if key in gt:
                pairs.append((key, lq_path, gt[key]))
            else:
                unmatched_lq.append(lq_path.name)
        matched = {key for key, _, _ in pairs}
        unmatched_gt = [p.name for s, p in sorted(gt.items()) if s not in matched]
        if unmatched_lq or unmatched_gt:
            parts = []
            if unmatched_lq:
                parts.append(f"LQ without GT in {self.gt_folder}: {_names(unmatched_lq)}")
            if unmatched_gt:
                parts.append(f"GT without LQ in {self.lq_folder}: {_names(unmatched_gt)}")
            raise DataError(
                "LQ and GT folders do not match (pairs share a file name without extension); "
                + "; ".join(parts)
            )
        if len({key for key, _, _ in pairs}) != len(pairs):
            raise DataError(f"several LQ files of {self.lq_folder} match the same GT file")
        self.pairs = pairs[:max_images]
        self.name = name or self.gt_folder.name
        self._lq_hw = [image_size(lq_path) for _, lq_path, _ in self.pairs]
        gt_hw = [image_size(gt_path) for _, _, gt_path in self.pairs]
        if scale is None:
            (lh, lw), (gh, gw) = self._lq_hw[0], gt_hw[0]
            scale = max(1, min(gh // lh, gw // lw))
        self.scale = int(scale)
        for (stem, lq_path, gt_path), (lh, lw), (gh, gw) in zip(
            self.pairs, self._lq_hw, gt_hw, strict=True
        ):
            if gh // self.scale != lh or gw // self.scale != lw:
                raise DataError(
                    f"size mismatch for pair '{stem}': LQ {lq_path} is {lh}x{lw}, GT {gt_path} is "
                    f"{gh}x{gw}; expected GT {lh * self.scale}x{lw * self.scale} (LQ x scale "
                    f"{self.scale}, up to {self.scale - 1} extra rows/columns allowed)"
                )

    def __len__(self) -> int:
        return len(self.pairs)

    def image_name(self, i: int) -> str:
        return self.pairs[self._check(i)][0]

    def describe(self, i: int) -> str:
        _, lq_path, gt_path = self.pairs[self._check(i)]
        return f"{lq_path} / {gt_path}"

    def lq_hw(self, i: int) -> tuple[int, int]:
        return self._lq_hw[self._check(i)]

    def image_hw(self, i: int) -> tuple[int, int]:
        lh, lw = self.lq_hw(i)
        return lh * self.scale, lw * self.scale

    def load(self, i: int) -> torch.Tensor:
        return self.load_pair(i)[1]

    def load_pair(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(lq, gt)`` with GT mod-cropped to exactly LQ x scale."""
        i = self._check(i)
        _, lq_path, gt_path = self.pairs[i]
        lq, gt = read_image(lq_path), read_image(gt_path)
        lh, lw = lq.shape[-2:]
        gh, gw = gt.shape[-2:]
        if gh // self.scale != lh or gw // self.scale != lw:  # file changed since the check
            raise DataError(
                f"size mismatch for pair '{self.pairs[i][0]}': LQ {lq_path} is {lh}x{lw}, "
                f"GT {gt_path} is {gh}x{gw} (scale {self.scale})"
            )
        return lq, gt[:, : lh * self.scale, : lw * self.scale]


# --------------------------------------------------------------------------- patch store
class PatchStoreSource(ImageSource):
    """Sub-images of a patch store (see :func:`resweep.data.patch_store.prepare_patch_store`),
    memory-mapped: crops are sliced from the mapped uint8 data, never decoded."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_images: int | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.reader = PatchStoreReader(self.path)
        self._n = len(self.reader) if max_images is None else min(max_images, len(self.reader))
        self.name = name or self.path.stem

    def __len__(self) -> int:
        return self._n

    def image_name(self, i: int) -> str:
        i = self._check(i)
        r = self.reader
        return f"{Path(r.images[i]).stem}_y{r.ys[i]}_x{r.xs[i]}"

    def describe(self, i: int) -> str:
        i = self._check(i)
        r = self.reader
        return f"{self.path} row {i} ({r.images[i]} at y={r.ys[i]}, x={r.xs[i]})"

    def image_hw(self, i: int) -> tuple[int, int]:
        i = self._check(i)
        return int(self.reader.heights[i]), int(self.reader.widths[i])

    def load_crop(self, i: int, top: int, left: int, height: int, width: int) -> torch.Tensor:
        # Slice the mapped uint8 first; only the crop is copied and converted to float.
        view = self.reader.pixels(self._check(i))[:, top : top + height, left : left + width]
        return torch.from_numpy(view.astype(np.float32)).div_(255.0)

    def load(self, i: int) -> torch.Tensor:
        h, w = self.image_hw(i)
        return self.load_crop(i, 0, 0, h, w)


# --------------------------------------------------------------------------- factory
def build_source(spec: DatasetSpec, scale: int | None = None) -> ImageSource:
    """The source a :class:`DatasetSpec` describes; ``scale`` checks paired LQ/GT sizes."""
    name = spec.display_name
    if spec.kind == "demo":
        return DemoSource(spec.split, max_images=spec.max_images, name=name)
    if spec.kind == "folder":
        assert spec.path is not None
        return FolderSource(spec.path, max_images=spec.max_images, name=name)
    if spec.kind == "paired":
        assert spec.lq_path is not None and spec.gt_path is not None
        return PairedSource(
            spec.lq_path, spec.gt_path, scale=scale, max_images=spec.max_images, name=name
        )
    if spec.kind == "patch_store":
        assert spec.path is not None
        return PatchStoreSource(spec.path, max_images=spec.max_images, name=name)
    raise DataError(f"unknown dataset kind '{spec.kind}'")
