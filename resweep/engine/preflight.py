"""Checks run on the driver before any Ray process starts, so bad input fails fast and clearly."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from resweep.config import ExperimentConfig
from resweep.data import build_train_dataset
from resweep.data.sources import FolderSource, PairedSource, build_source
from resweep.degradations.tasks import build_task
from resweep.errors import DataError


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
    dataset = build_train_dataset(config, task)  # lists the folder, checks sizes vs the crop
    sources = [dataset.source]
    for spec in config.eval.sets:
        sources.append(build_source(spec, scale=config.scale))
    if verify_images:
        for source in sources:
            if isinstance(source, FolderSource | PairedSource):
                _verify_files(_files_of(source))
