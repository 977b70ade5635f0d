"""Writing a dataset of the study folder as parts (reading: :func:`resweep.study.layout.read_parquet`).

A dataset (``trials.parquet``, ``curves.parquet``, ``per_image.parquet``) is a folder. While a
trial runs its rows live in its own part, rewritten atomically when they change; ended trials'
rows are moved in batches into chunks (``chunk~<n>.parquet``, written once), and at the end of
an experiment the whole folder is compacted into one chunk. So one event rewrites one trial's
rows, never the study's: the driver's cost per trial does not grow with the study.

Every step keeps a reader's view whole: a new part or chunk is written to a temporary file and
renamed; the parts it replaces are removed only afterwards (until then the reader's precedence
rules pick the same rows from either), and a reader that finds a listed part gone lists again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from resweep.fileio import atomic_path
from resweep.study.layout import chunk_name, chunk_seq, list_parts, read_parquet


def write_table(table: pa.Table, path: Path) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def next_chunk(folder: Path) -> int:
    seqs = [chunk_seq(p) for p in folder.glob("*.parquet")] if folder.is_dir() else []
    return max(seqs, default=-1) + 1


def write_chunk(folder: Path, table: pa.Table, seq: int) -> Path:
    path = folder / chunk_name(seq)
    write_table(table, path)
    return path


def remove(paths: list[Path]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def adopt_single_file(path: Path) -> None:
    """A study written before parts existed holds one file per dataset: it becomes the first
    chunk of the folder of that name (moved, not rewritten)."""
    if not path.is_file():
        return
    moved = path.with_name(path.name + ".single~")
    os.replace(path, moved)
    path.mkdir()
    os.replace(moved, path / chunk_name(0))


def recover_single_file(path: Path) -> None:
    """Finish :func:`adopt_single_file` after a driver killed between its two renames."""
    moved = path.with_name(path.name + ".single~")
    if moved.is_file():
        path.mkdir(exist_ok=True)
        os.replace(moved, path / chunk_name(next_chunk(path)))


def compact(folder: Path) -> None:
    """Merge every part of a dataset folder into one new chunk (reads the dataset whole: once
    per experiment, at its end)."""
    parts = list_parts(folder) if folder.is_dir() else []
    if len(parts) <= 1 and all(chunk_seq(p) >= 0 for p in parts):
        return
    table = read_parquet(folder)
    write_chunk(folder, table, next_chunk(folder))
    remove(parts)
