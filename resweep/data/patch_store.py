"""Patch stores: a folder of large images cut once into overlapping sub-images, kept as uint8
in one uncompressed Arrow IPC file.

Training reads random crops of every image at every step. Decoding a 2K PNG/JPEG for each
sample dominates the cost of small models, so, as BasicSR's ``extract_subimages`` does for
DIV2K, the images are cut into ``sub_size`` sub-images once; here they land in a single
Arrow file that readers memory-map: a crop is a slice of the page cache, with no decoding
and no copy until the float conversion of the crop itself.

Layout: one record batch per source image; columns ``image`` (source file name), ``y``,
``x``, ``height``, ``width`` (position of the sub-image in its source) and ``pixels``
(``large_binary``: the sub-image as contiguous ``(3, height, width)`` uint8, RGB).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
from tqdm.auto import tqdm

from resweep.data.images import list_images, to_uint8_chw
from resweep.errors import DataError

__all__ = ["PATCH_STORE_FORMAT", "PatchStoreReader", "prepare_patch_store", "subimage_positions"]

PATCH_STORE_FORMAT = "resweep-patch-store"
_VERSION = "1"
_SCHEMA_FIELDS = [
    pa.field("image", pa.string()),
    pa.field("y", pa.int32()),
    pa.field("x", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("width", pa.int32()),
    pa.field("pixels", pa.large_binary()),  # int64 offsets: no 2 GiB limit per batch
]


def subimage_positions(length: int, sub_size: int, stride: int) -> list[int]:
    """Start offsets along one axis, as BasicSR's ``extract_subimages`` (``thresh_size=0``):
    every ``stride`` pixels, plus one window flush with the end if the last one stops short.
    An axis shorter than ``sub_size`` gives a single window covering it whole."""
    if length <= sub_size:
        return [0]
    positions = list(range(0, length - sub_size + 1, stride))
    if positions[-1] + sub_size < length:
        positions.append(length - sub_size)
    return positions


def prepare_patch_store(
    folder: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    sub_size: int = 480,
    stride: int = 240,
    min_size: int | None = None,
    progress: bool = True,
) -> Path:
    """Cut every image of ``folder`` into overlapping ``sub_size`` sub-images and write them
    to the Arrow IPC file ``out_path`` (atomically: a temporary file renamed at the end).

    Images smaller than ``sub_size`` (on either side) are stored whole along that side.
    ``min_size`` skips images whose height or width is below it (e.g. the GT patch size, so
    every stored sub-image can give a training crop). Returns ``out_path``.
    """
    if sub_size < 1 or stride < 1:
        raise ValueError(f"sub_size and stride must be >= 1, got {sub_size}, {stride}")
    files = list_images(folder)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    schema = pa.schema(
        _SCHEMA_FIELDS,
        metadata={
            "format": PATCH_STORE_FORMAT,
            "version": _VERSION,
            "layout": "CHW uint8 RGB",
            "sub_size": str(sub_size),
            "stride": str(stride),
            "source": str(Path(folder).resolve()),
        },
    )
    total, skipped = 0, []
    try:
        with open(tmp, "wb") as fh:
            options = ipc.IpcWriteOptions(compression=None)  # uncompressed: readable zero-copy
            with ipc.new_file(fh, schema, options=options) as writer:
                bar = tqdm(
                    files, desc=f"patch store {out_path.name}", unit="img", disable=not progress
                )
                for path in bar:
                    img = to_uint8_chw(path)  # DataError names the file
                    _, h, w = img.shape
                    if min_size is not None and min(h, w) < min_size:
                        skipped.append(path.name)
                        continue
                    batch = _cut(img, path.name, sub_size, stride, schema)
                    writer.write_batch(batch)
                    total += batch.num_rows
                    bar.set_postfix(subimages=total)
            fh.flush()
            os.fsync(fh.fileno())
        if total == 0:
            raise DataError(
                f"no image of {folder} is at least {min_size} pixels on each side "
                f"(min_size); nothing to store in {out_path}"
            )
        os.replace(tmp, out_path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if skipped and progress:
        shown = ", ".join(skipped[:10]) + (" ..." if len(skipped) > 10 else "")
        tqdm.write(f"skipped {len(skipped)} image(s) smaller than {min_size}: {shown}")
    return out_path


def _cut(
    img: np.ndarray, name: str, sub_size: int, stride: int, schema: pa.Schema
) -> pa.RecordBatch:
    _, h, w = img.shape
    ys, xs, hs, ws, pixels = [], [], [], [], []
    for y in subimage_positions(h, sub_size, stride):
        for x in subimage_positions(w, sub_size, stride):
            sub = img[:, y : y + sub_size, x : x + sub_size]
            ys.append(y)
            xs.append(x)
            hs.append(sub.shape[1])
            ws.append(sub.shape[2])
            pixels.append(np.ascontiguousarray(sub).tobytes())
    columns = [
        pa.array([name] * len(ys), pa.string()),
        pa.array(ys, pa.int32()),
        pa.array(xs, pa.int32()),
        pa.array(hs, pa.int32()),
        pa.array(ws, pa.int32()),
        pa.array(pixels, pa.large_binary()),
    ]
    return pa.record_batch(columns, schema=schema)


class PatchStoreReader:
    """Memory-mapped, zero-copy access to a patch store.

    The small columns (name, position, size) are read into numpy at open; ``pixels(i)`` is a
    read-only ``(3, h, w)`` uint8 view on the mapped file. Picklable (for DataLoader workers
    and Ray): the mapping is dropped and re-opened lazily in the receiving process.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._data: list[tuple[np.ndarray, np.ndarray]] | None = None
        self._mmap: pa.MemoryMappedFile | None = None
        self._open()

    def _fail(self, reason: str) -> DataError:
        return DataError(f"corrupt or truncated patch store {self.path}: {reason}")

    def _open(self) -> None:
        if not self.path.is_file():
            raise DataError(
                f"patch store not found: {self.path} (create it with prepare_patch_store "
                "from a folder of images)"
            )
        try:
            mmap = pa.memory_map(str(self.path), "r")
            reader = ipc.open_file(mmap)
            schema = reader.schema
            batches = [reader.get_batch(k) for k in range(reader.num_record_batches)]
            for batch in batches:
                batch.validate()  # buffer sizes vs lengths: catches truncation inside the file
        except (pa.ArrowException, OSError, ValueError) as exc:
            raise self._fail(f"{type(exc).__name__}: {exc}") from exc
        meta = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
        if meta.get("format") != PATCH_STORE_FORMAT:
            raise self._fail(f"not a resweep patch store (format {meta.get('format')!r})")
        missing = [f.name for f in _SCHEMA_FIELDS if schema.get_field_index(f.name) < 0]
        if missing:
            raise self._fail(f"missing columns {missing}")
        if not batches:
            raise self._fail("it holds no sub-images")
        self.metadata = meta

        def column(name: str) -> np.ndarray:
            return np.concatenate([b.column(name).to_numpy(zero_copy_only=False) for b in batches])

        first = not hasattr(self, "images")  # re-opened after unpickling: index already known
        if first:
            self.images = [str(v) for v in column("image")]
            self.ys, self.xs = column("y").astype(np.int64), column("x").astype(np.int64)
            self.heights = column("height").astype(np.int64)
            self.widths = column("width").astype(np.int64)
            self._batch_starts = np.cumsum([0] + [b.num_rows for b in batches])
        data = []
        for k, batch in enumerate(batches):
            arr = batch.column("pixels")
            if arr.null_count:
                raise self._fail(f"record batch {k} has missing pixels")
            _, offsets_buf, values_buf = arr.buffers()
            offsets = np.frombuffer(offsets_buf, dtype=np.int64)[
                arr.offset : arr.offset + len(arr) + 1
            ]
            values = (
                np.frombuffer(values_buf, dtype=np.uint8)
                if values_buf is not None
                else np.empty(0, np.uint8)
            )
            data.append((offsets, values))
        if first:
            lengths = np.concatenate([np.diff(off) for off, _ in data])
            bad = np.nonzero(lengths != 3 * self.heights * self.widths)[0]
            if bad.size:
                i = int(bad[0])
                raise self._fail(
                    f"row {i} ({self.images[i]}) has {lengths[i]} bytes of pixels for a "
                    f"{self.heights[i]}x{self.widths[i]} RGB sub-image"
                )
        self._mmap, self._data = mmap, data

    def __len__(self) -> int:
        return len(self.images)

    def pixels(self, i: int) -> np.ndarray:
        """Sub-image ``i`` as a read-only ``(3, h, w)`` uint8 view on the mapped file."""
        if self._data is None:
            self._open()
        assert self._data is not None
        k = int(np.searchsorted(self._batch_starts, i, side="right")) - 1
        offsets, values = self._data[k]
        j = i - int(self._batch_starts[k])
        flat = values[offsets[j] : offsets[j + 1]]
        return flat.reshape(3, int(self.heights[i]), int(self.widths[i]))

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_mmap"] = None  # memory maps do not pickle; re-opened on first access
        state["_data"] = None
        return state

    def close(self) -> None:
        self._data = None
        if self._mmap is not None:
            self._mmap.close()
            self._mmap = None
