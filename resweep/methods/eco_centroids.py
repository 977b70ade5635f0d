"""ECO's centroid artifact: its file format, its reader, and its computation.

``ŷc = F_pre(x)`` for every WHOLE training image (``TrainPatchDataset.full_pair``, so x, y,
ŷc and D(ŷc) share one pixel grid). The ``eco_centroids`` stage
(:mod:`resweep.stages.eco_centroids`) computes it once per study; each trial reads it::

    manifest.json    what was computed (teacher, data, task, per-image sizes)
    centroid.npy     ŷc of all images, flattened and concatenated (uint8/f16/f32)
    centroid_lr.npy  D(ŷc), float32, computed from the *stored* ŷc
    clean_lr.npy     D(y), float32 (noisy tasks only: recovers the noise draw)

One flat file per kind keeps three file descriptors open however many images there are; the
files are memory-mapped, so a crop reads only its pixels.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

from resweep.degradations.imresize import bicubic_downsample
from resweep.errors import ResweepError

if TYPE_CHECKING:
    from resweep.data.datasets import TrainPatchDataset
    from resweep.methods.eco_teacher import ResolvedTeacher

CentroidDtype = Literal["uint8", "float16", "float32"]
_NP_DTYPES = {"uint8": np.uint8, "float16": np.float16, "float32": np.float32}
Log = Callable[[str], None]


def lr_sizes(dataset: TrainPatchDataset) -> list[tuple[int, int]]:
    """LR ``(h, w)`` of every whole image, as ``full_pair`` produces it (no decoding)."""
    src, s = dataset.source, dataset.scale
    if dataset.paired:
        return [tuple(src.lq_hw(i)) for i in range(len(src))]  # type: ignore[attr-defined,misc]
    return [(h // s, w // s) for h, w in (src.image_hw(i) for i in range(len(src)))]


class CentroidStore:
    """A finished cache entry, read through memory maps (opened lazily in each process)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.manifest: dict[str, Any] = json.loads((self.path / "manifest.json").read_text())
        self.scale = int(self.manifest["scale"])
        self.lr_hw = [tuple(hw) for hw in self.manifest["lr_sizes"]]
        self.has_clean_lr = bool(self.manifest["clean_lr"])
        self.dtype: str = self.manifest["centroid_dtype"]
        s2 = self.scale * self.scale
        lr_sizes = [3 * h * w for h, w in self.lr_hw]
        self._lr_off = np.concatenate([[0], np.cumsum(lr_sizes)]).astype(np.int64)
        self._hr_off = self._lr_off * s2
        self._maps: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.lr_hw)

    def __getstate__(self) -> dict[str, Any]:
        # DataLoader workers re-open the maps; pickling a memmap would copy the whole file.
        return {**self.__dict__, "_maps": {}}

    def _map(self, kind: str) -> np.ndarray:
        if kind not in self._maps:
            self._maps[kind] = np.load(self.path / f"{kind}.npy", mmap_mode="r")
        return self._maps[kind]

    def _image(self, kind: str, i: int) -> np.ndarray:
        h, w = self.lr_hw[i]
        if kind == "centroid":
            s = self.scale
            return self._map(kind)[self._hr_off[i] : self._hr_off[i + 1]].reshape(3, h * s, w * s)
        return self._map(kind)[self._lr_off[i] : self._lr_off[i + 1]].reshape(3, h, w)

    def centroid(self, i: int) -> Tensor:
        """ŷc of image ``i`` as float32 in [0, 1] (whole image: a copy; crops go through ``view``)."""
        return to_float(np.array(self._image("centroid", i)), self.dtype)

    def centroid_lr(self, i: int) -> Tensor:
        return torch.from_numpy(np.array(self._image("centroid_lr", i)))

    def clean_lr(self, i: int) -> Tensor:
        return torch.from_numpy(np.array(self._image("clean_lr", i)))

    def view(self, kind: str, i: int) -> MappedImage:
        """A lazily cropped view (``crop_aligned`` slices it; only the crop is read)."""
        return MappedImage(self._image(kind, i), self.dtype if kind == "centroid" else "float32")


def to_float(arr: np.ndarray, dtype: str) -> Tensor:
    """Stored centroid values (a writable array, not a read-only map) -> float32 in [0, 1]."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    return t.float().div_(255.0) if dtype == "uint8" else t.float()


class MappedImage:
    """A ``(3, H, W)`` memory-mapped array that ``crop_aligned`` can slice like a tensor."""

    def __init__(self, arr: np.ndarray, dtype: str):
        self.arr, self.dtype = arr, dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size(self.arr.shape)

    def __getitem__(self, key: Any) -> Tensor:
        return to_float(np.array(self.arr[key]), self.dtype)


# --------------------------------------------------------------------------- computation
def teacher_forward(
    model: nn.Module, lq: Tensor, scale: int, tile: int, overlap: int, counter: _PassCounter | None = None
) -> Tensor:
    """``model(lq)`` for a ``(3, h, w)`` image, in LR tiles of side ``tile`` when the image is
    larger, so memory does not grow with the image. Neighbouring tiles overlap by ``overlap``
    pixels and each keeps only the part at least ``overlap // 2`` from its inner edges, so the
    result equals a whole-image pass wherever the network's receptive radius is within
    ``overlap // 2`` (zero padding only ever happens at the image's own border)."""
    c, h, w = lq.shape
    if h <= tile and w <= tile:
        if counter is not None:
            counter.passes += 1
        return model(lq.unsqueeze(0)).squeeze(0).float()
    stride, half = max(1, tile - overlap), overlap // 2

    def starts(n: int) -> list[int]:
        if n <= tile:
            return [0]
        out = list(range(0, n - tile + 1, stride))
        if out[-1] != n - tile:
            out.append(n - tile)
        return out

    def valid(start: int, size: int, n: int) -> tuple[int, int]:
        return start + (half if start > 0 else 0), start + size - (half if start + size < n else 0)

    out = torch.empty(c, h * scale, w * scale, device=lq.device)
    th, tw = min(tile, h), min(tile, w)
    for y in starts(h):
        for x in starts(w):
            pred = model(lq[:, y : y + th, x : x + tw].unsqueeze(0)).squeeze(0).float()
            if counter is not None:
                counter.passes += 1
            (y0, y1), (x0, x1) = valid(y, th, h), valid(x, tw, w)
            out[:, y0 * scale : y1 * scale, x0 * scale : x1 * scale] = pred[
                :, (y0 - y) * scale : (y1 - y) * scale, (x0 - x) * scale : (x1 - x) * scale
            ]
    return out


def quantize_centroid(sr: Tensor, dtype: str) -> np.ndarray:
    sr = sr.clamp(0.0, 1.0).cpu()
    if dtype == "uint8":
        return sr.mul(255.0).round().to(torch.uint8).numpy()
    return sr.numpy().astype(_NP_DTYPES[dtype])


def downsample_exact(img: Tensor, scale: int) -> Tensor:
    """D(img) in float64, one channel at a time (bounded memory on 2K images), as float32."""
    channels = [bicubic_downsample(img[c : c + 1].double(), scale) for c in range(img.shape[0])]
    return torch.cat(channels).float()



class _PassCounter:
    """Counts the teacher's forward passes of one computation (recorded in the manifest)."""

    def __init__(self) -> None:
        self.passes = 0


def compute_centroids(
    dataset: TrainPatchDataset,
    teacher: ResolvedTeacher,
    out: Path,
    *,
    teacher_input: Literal["task", "clean"] = "task",
    centroid_dtype: CentroidDtype = "uint8",
    clean_lr: bool = False,
    tile: int = 512,
    tile_overlap: int = 32,
    device: torch.device | None = None,
    log: Log = print,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the centroid files of every whole image of ``dataset`` into ``out``; the manifest."""
    from tqdm.auto import tqdm

    device = device or torch.device("cpu")
    ds, s = dataset, dataset.scale
    sizes = lr_sizes(ds)
    n_lr = sum(3 * h * w for h, w in sizes)
    open_mm = np.lib.format.open_memmap
    centroid = open_mm(out / "centroid.npy", mode="w+", dtype=_NP_DTYPES[centroid_dtype], shape=(n_lr * s * s,))
    centroid_lr = open_mm(out / "centroid_lr.npy", mode="w+", dtype=np.float32, shape=(n_lr,))
    noise_free_lr = open_mm(out / "clean_lr.npy", mode="w+", dtype=np.float32, shape=(n_lr,)) if clean_lr else None
    log(f"eco: computing centroids of {len(ds)} image(s) with the teacher ({teacher.source})")
    start = time.perf_counter()
    counter = _PassCounter()
    model = teacher.build(device)
    lr_off = hr_off = 0
    bar = tqdm(range(len(ds)), desc="eco centroids", unit="img", disable=not progress, mininterval=1.0)
    with torch.no_grad():
        for i in bar:
            pair = ds.full_pair(i)
            gt = pair["gt"]
            lq = pair["lq"] if teacher_input == "task" else bicubic_downsample(gt, s)
            h, w = sizes[i]
            if tuple(lq.shape[-2:]) != (h, w) or tuple(gt.shape[-2:]) != (h * s, w * s):
                raise ResweepError(
                    f"eco: {ds.source.describe(i)} has LR {tuple(lq.shape[-2:])} / GT "
                    f"{tuple(gt.shape[-2:])}, expected {(h, w)} / {(h * s, w * s)}"
                )
            sr = teacher_forward(model, lq.to(device), s, tile, tile_overlap, counter)
            stored = quantize_centroid(sr, centroid_dtype)
            m = stored.size
            centroid[hr_off : hr_off + m] = stored.reshape(-1)
            # D(ŷc) from the *stored* centroid: the blend then satisfies D(y_t) = x_t exactly.
            c_lr = downsample_exact(to_float(stored, centroid_dtype), s)
            centroid_lr[lr_off : lr_off + c_lr.numel()] = c_lr.numpy().reshape(-1)
            if noise_free_lr is not None:
                y_lr = downsample_exact(gt, s)
                noise_free_lr[lr_off : lr_off + y_lr.numel()] = y_lr.numpy().reshape(-1)
            hr_off += m
            lr_off += c_lr.numel()
    for arr in (centroid, centroid_lr, noise_free_lr):
        if arr is not None:
            arr.flush()
    del centroid, centroid_lr, noise_free_lr
    seconds = time.perf_counter() - start
    manifest = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "seconds": seconds,
        "computed_images": len(ds),
        "teacher_forward_passes": counter.passes,
        "teacher_source": teacher.source,
        "teacher_weights_sha256": teacher.weights_sha256,
        "teacher_trained_task": teacher.trained_task,
        "scale": s,
        "centroid_dtype": centroid_dtype,
        "clean_lr": clean_lr,
        "lr_sizes": [list(hw) for hw in sizes],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    log(f"eco: centroids of {len(ds)} image(s) computed in {seconds:.1f} s")
    return manifest
