"""Reading image files into ``(3, H, W)`` float32 tensors in [0, 1], with errors naming the file,
and writing them back as PNG."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from resweep.errors import DataError

__all__ = ["IMAGE_EXTENSIONS", "image_size", "list_images", "read_image", "save_png", "to_uint8_chw"]

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})

# Errors PIL raises for unreadable files: unknown format, truncated data, bad headers.
_READ_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    Image.DecompressionBombError,
)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, UnidentifiedImageError):
        return "not a recognised image format (corrupted or not an image)"
    return f"{type(exc).__name__}: {exc}"


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """An ``(H, W, 3)`` array, uint8 or float32 in [0, 1] for high-bit-depth files."""
    mode = img.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (PNG/TIFF): scale by the 16-bit range rather than PIL's 8-bit clip.
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        return np.repeat(np.clip(arr, 0.0, 1.0)[..., None], 3, axis=2)
    if mode == "F":
        arr = np.clip(np.asarray(img, dtype=np.float32), 0.0, 1.0)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # avoids PIL's warning; the alpha is dropped below
    if img.mode != "RGB":
        # L, LA, 1, P, RGBA, CMYK, YCbCr...: alpha is dropped, grey is copied to R, G, B.
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.uint8)


def to_uint8_chw(path: str | os.PathLike[str]) -> np.ndarray:
    """Decode a file to a contiguous ``(3, H, W)`` uint8 array (8 bits: what patch stores keep)."""
    arr = _decode(path)
    if arr.dtype != np.uint8:
        arr = np.round(arr * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def _decode(path: str | os.PathLike[str]) -> np.ndarray:
    try:
        with Image.open(path) as img:
            img.load()  # decode now, so truncated data fails here and not later
            return _to_rgb_array(img)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {_reason(exc)}") from exc


def read_image(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an image file as a ``(3, H, W)`` float32 tensor in [0, 1].

    Greyscale, palette, alpha and 16-bit files become RGB; EXIF orientation is ignored
    (benchmark sets are stored upright). Unreadable files raise :class:`DataError`.
    """
    arr = _decode(path)
    tensor = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32).div_(255.0)
    return tensor.to(torch.float32)


def image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """``(H, W)`` of an image file, read from its header without decoding the pixels."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read image {path}: {_reason(exc)}") from exc
    return int(height), int(width)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The image files of a folder (not recursive), sorted by name.

    Extensions: png, jpg, jpeg, bmp, tif, tiff, webp (any case). A missing folder, a path
    that is not a folder, or a folder without images raises :class:`DataError`.
    """
    folder = Path(folder).expanduser()
    if not folder.exists():
        raise DataError(f"image folder not found: {folder} (expected a folder of image files)")
    if not folder.is_dir():
        raise DataError(f"not a folder: {folder} (expected a folder of image files)")
    # Hidden files (e.g. macOS "._name.png" resource forks) are not images.
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    )
    if not files:
        exts = ", ".join(sorted(e.lstrip(".") for e in IMAGE_EXTENSIONS))
        raise DataError(f"no image files in {folder} (expected files ending in {exts})")
    return files


def save_png(image: torch.Tensor, path: Path) -> None:
    """8-bit RGB PNG of a (3,H,W) image in [0,1], written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = (image.detach().float().clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    Image.fromarray(np.ascontiguousarray(array)).save(tmp, format="PNG")
    os.replace(tmp, path)
