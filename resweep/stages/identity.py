"""Identity of the inputs a stage definition names (data sets, weight files), for its key.

File names, sizes and modification times (no pixel decoding: cheap on the driver), and a
content hash for small weight files. Computed once on the driver: trials never recompute a
key, so nodes holding copies of the data with other mtimes still read the driver's artifact.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from resweep.config import DatasetSpec


def _stats(paths: list[Path]) -> list[list[Any]]:
    out = []
    for p in paths:
        st = Path(p).stat()
        out.append([Path(p).name, st.st_size, st.st_mtime_ns])
    return out


def dataset_identity(spec: DatasetSpec) -> dict[str, Any]:
    """Which images a ``DatasetSpec`` stands for, as a JSON-able mapping."""
    from resweep.data.images import list_images

    out: dict[str, Any] = {"kind": spec.kind, "max_images": spec.max_images}
    if spec.kind == "folder":
        assert spec.path is not None
        out["files"] = _stats(list_images(Path(spec.path))[: spec.max_images])
    elif spec.kind == "paired":
        assert spec.lq_path is not None and spec.gt_path is not None
        out["lq"] = _stats(list_images(Path(spec.lq_path))[: spec.max_images])
        out["gt"] = _stats(list_images(Path(spec.gt_path))[: spec.max_images])
    elif spec.kind == "patch_store":
        assert spec.path is not None
        out["files"] = _stats([Path(spec.path)])
    elif spec.kind == "video_folder":
        from resweep.data.video_clips import discover_clips

        assert spec.path is not None
        out["clips"] = {clip.name: _stats(list(clip.files)) for clip in discover_clips(spec.path)}
    else:  # the demo photographs (and demo clips) ship with scikit-image: its version pins them
        import skimage

        out.update(split=spec.split, skimage=skimage.__version__)
    return out


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
