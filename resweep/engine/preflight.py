"""Checks run on the driver before any Ray process starts, so bad input fails fast and clearly.

Data: the training folder is listed and sized against the crop, every image header verified.
Files: every path the config names outside its data sections (``model.init_from``, a method's
weights, teacher checkpoints, pretrained negatives, feature-network weights, found by walking
the config's values so a new knob is covered without a list to maintain) must exist and, when it
is a torch file, load with ``weights_only=True``: a pickle payload is refused here, with the
field and the file, not 150 lines into a worker's traceback.
"""

from __future__ import annotations

import contextlib
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image
from pydantic import BaseModel

from resweep.config import ExperimentConfig
from resweep.data import build_train_dataset
from resweep.data.sources import FolderSource, PairedSource, build_source
from resweep.degradations.tasks import build_task
from resweep.engine.checkpoint import CHECKPOINT_FILE
from resweep.errors import ConfigError, DataError, WeightsNotFoundError

# config sections whose paths are data, checked image by image below
_DATA_SECTIONS = ("data", "eval")
# files read as text, not as torch files (a teacher's training config may be a YAML path)
_TEXT_SUFFIXES = (".yaml", ".yml", ".json", ".txt")


def _verify_files(paths: list[Path]) -> None:
    # PIL's verify() checks a file's structure without decoding all pixels: cheap enough to
    # run over a whole folder, and it catches the truncated or corrupted files that would
    # otherwise crash a worker hours into a run.
    for path in paths:
        try:
            with Image.open(path) as img:
                img.verify()
        except Exception as exc:
            raise DataError(f"cannot read image {path}: {exc}") from None


def _files_of(source: FolderSource | PairedSource) -> list[Path]:
    if isinstance(source, PairedSource):
        return [path for _, lq, gt in source.pairs for path in (lq, gt)]
    return list(source.files)


def preflight(config: ExperimentConfig, *, verify_images: bool = True) -> None:
    """Raise DataError/ConfigError for a run that could not train or evaluate."""
    task = build_task(config.task)
    with _naming("data.train"):
        dataset = build_train_dataset(config, task)  # lists the folder, checks sizes vs the crop
    sources = [("data.train", dataset.source)]
    for i, spec in enumerate(config.eval.sets):
        with _naming(f"eval.sets[{i}]"):
            if task.is_video:  # clip folders: discovering them checks sizes and frame numbering
                from resweep.data.video import build_video_source

                sources.append((f"eval.sets[{i}]", build_video_source(spec, field="eval.sets")))
            else:
                sources.append((f"eval.sets[{i}]", build_source(spec, scale=config.scale)))
    if verify_images:
        for field, source in sources:
            if isinstance(source, FolderSource | PairedSource):
                with _naming(field):
                    _verify_files(_files_of(source))
    check_named_files(config)


@contextlib.contextmanager
def _naming(field: str) -> Iterator[None]:
    """Put the config field in front of a data error (which folder of which section)."""
    try:
        yield
    except DataError as exc:
        raise DataError(f"{field}: {exc}") from None


# --------------------------------------------------------------------------- files a config names
def named_paths(node: Any, prefix: str = "") -> Iterator[tuple[str, Path]]:
    """``(dotted field, path)`` for every ``Path`` value in a config tree, data sections excluded."""
    if isinstance(node, Path):
        yield prefix, node
    elif isinstance(node, BaseModel):
        for name in type(node).model_fields:
            field = f"{prefix}.{name}" if prefix else name
            if not prefix and name in _DATA_SECTIONS:
                continue
            yield from named_paths(getattr(node, name), field)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from named_paths(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(node, list | tuple):
        for i, value in enumerate(node):
            yield from named_paths(value, f"{prefix}.{i}")


def check_named_files(config: ExperimentConfig) -> None:
    """Every file the config names exists and is safe to load; feature-network weights that a
    method will look up (no path given, random features not allowed) are found."""
    for field, path in named_paths(config):
        check_file(path, field)
    # a disabled method is never built: it looks no weights up (its named files are still checked)
    for name, method in config.enabled_methods.items():
        _check_feature_weights(method, f"methods.{name}")


def check_file(path: Path, field: str) -> None:
    """Refuse a missing file, a folder without a checkpoint, or a torch file that is not safe."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"file not found: {path}", field=field)
    if path.is_dir():
        checkpoints = _checkpoints_in(path)
        if not checkpoints:
            raise ConfigError(f"no {CHECKPOINT_FILE} in {path} (a resweep checkpoint or run folder "
                              "was expected)", field=field)
        for checkpoint in checkpoints:
            check_torch_file(checkpoint, field)
        return
    if path.suffix.lower() in _TEXT_SUFFIXES:
        return
    check_torch_file(path, field)


def _checkpoints_in(folder: Path) -> list[Path]:
    """A checkpoint folder's own file, else every checkpoint of a run folder (whichever of them
    the method picks, it is safe)."""
    if (folder / CHECKPOINT_FILE).is_file():
        return [folder / CHECKPOINT_FILE]
    return sorted(p for p in folder.rglob(CHECKPOINT_FILE)
                  if not any(part.startswith(".") for part in p.relative_to(folder).parts))


def check_torch_file(path: Path, field: str) -> None:
    """Load ``path`` as the product will (``weights_only=True``), memory-mapped so a large file
    costs no copy. A pickle payload (code to run at load time) is refused."""
    import warnings

    import torch

    def load(mmap: bool) -> None:
        with warnings.catch_warnings():  # e.g. "pickle protocol 4": the refusal below says more
            warnings.simplefilter("ignore")
            torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)

    try:
        try:
            load(mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # files in torch's legacy format cannot be memory-mapped
                raise
            load(mmap=False)
    except pickle.UnpicklingError as exc:
        raise ConfigError(
            f"{path} is not a safe torch file: loading it with weights_only=True was refused "
            f"({_refusal_reason(exc)}); only tensors and plain containers are loaded, never pickled code",
            field=field,
        ) from None
    except Exception as exc:  # truncated, not a torch file at all, unreadable
        raise ConfigError(f"cannot read {path} as a torch weights file: {type(exc).__name__}: "
                          f"{_first_line(exc)}", field=field) from None


# torch's weights_only refusal wraps its one informative line in advice paragraphs
_TORCH_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation",
                      "Re-running", "In PyTorch")


def _refusal_reason(exc: BaseException) -> str:
    for line in str(exc).splitlines():
        line = line.strip().removeprefix("WeightsUnpickler error:").strip()
        if line and not line.startswith(_TORCH_BOILERPLATE):
            return line
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _check_feature_weights(method: Any, field: str) -> None:
    """A method with a feature network (``feature_weights`` / ``allow_random_features`` knobs,
    as SPN has) looks its weights up at run time: find them now, or say what is missing."""
    if not hasattr(method, "feature_weights") or getattr(method, "allow_random_features", True):
        return
    if method.feature_weights is not None:
        return  # an explicit path: checked with the other named files
    from resweep.losses.feature_nets import resolve_weights

    arch = getattr(method, "feature_net", "vgg16")
    try:
        path = resolve_weights(arch)
    except WeightsNotFoundError as exc:
        raise ConfigError(" ".join(str(exc).split()), field=f"{field}.feature_weights") from None
    check_torch_file(path, f"{field}.feature_weights")
