"""Where artifacts live: ``<storage>/artifacts/<key>/``, on a local disk or S3-compatible storage.

Storage is reached through ``pyarrow.fs`` as Ray Tune reaches it, so any URI Ray accepts
works here: a local path, ``s3://bucket/prefix`` (an S3-compatible endpoint comes from
``AWS_ENDPOINT_URL`` or the URI's ``?endpoint_override=host:port&scheme=http`` query), ...

Layout of one artifact::

    <storage>/artifacts/<key>/definition.json    what it is (kind, definition, identity)
                              <attempt>/...       the artifact's files, as the producer wrote them
                              COMMITTED.json      the commit marker: which attempt, metrics, time

Atomicity: a producer writes into a local scratch folder, uploads it under a fresh
``<attempt>`` id, and only then writes ``COMMITTED.json`` (one object: a single PUT on S3, a
rename on a local disk). Readers look for the marker and read the attempt it names, so a
killed producer leaves an attempt nobody reads, and the next producer starts a new one.

Concurrency: on a local (or NFS) disk producers of one key serialise on a ``filelock`` next
to it, so the artifact is made once. S3 has no lock: two studies starting the same artifact
at the same moment may both produce it; the first commit marker wins (re-checked just before
committing; the loser deletes its attempt and reads the winner's), so readers still see one
complete artifact.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

COMMIT_FILE = "COMMITTED.json"
DEFINITION_FILE = "definition.json"
ARTIFACTS_DIR = "artifacts"


def scratch_root() -> Path:
    """This process's local scratch for fetched artifacts: ``$RESWEEP_SCRATCH``, else
    ``<tmp>/resweep-scratch`` (each node has its own)."""
    import tempfile

    return Path(os.environ.get("RESWEEP_SCRATCH") or Path(tempfile.gettempdir()) / "resweep-scratch")


def join_uri(base: str, *parts: str) -> str:
    """``base/parts...`` for a path or a URI, keeping a URI's query (``?endpoint_override=``)."""
    if "://" not in base:
        return str(Path(base, *parts))
    split = urlsplit(base)
    path = "/".join([split.path.rstrip("/"), *[p.strip("/") for p in parts]])
    return urlunsplit((split.scheme, split.netloc, path, split.query, split.fragment))


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def filesystem(uri: str) -> tuple[Any, str]:
    """``(pyarrow FileSystem, path inside it)`` of a path or URI, as Ray Tune resolves it."""
    import pyarrow.fs as pafs

    if "://" not in uri:
        return pafs.LocalFileSystem(), str(Path(uri).resolve())
    return pafs.FileSystem.from_uri(uri)


@dataclass
class Committed:
    """A finished artifact: its marker's content and where its files are."""

    key: str
    marker: dict[str, Any]
    uri: str  # of the attempt folder holding the files

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self.marker.get("metrics") or {})


class ArtifactStore:
    """The artifacts of one storage root (``<storage>/artifacts``)."""

    def __init__(self, storage: str | Path):
        self.storage = str(storage)
        self.root_uri = join_uri(self.storage, ARTIFACTS_DIR)
        self.fs, self.root = filesystem(self.root_uri)
        self.local = not is_remote(self.storage)

    # ------------------------------------------------------------------ paths
    def _path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts])

    def uri(self, key: str, *parts: str) -> str:
        return join_uri(self.root_uri, key, *parts)

    def local_dir(self, key: str, attempt: str) -> Path:
        """The folder of a committed attempt on a local disk (read in place: it never changes)."""
        assert self.local
        return Path(self._path(key, attempt))

    # ------------------------------------------------------------------ reading
    def _read_json(self, path: str) -> dict[str, Any] | None:
        import pyarrow.fs as pafs

        if self.fs.get_file_info(path).type != pafs.FileType.File:
            return None
        with self.fs.open_input_stream(path) as stream:
            return json.loads(stream.read().decode())

    def committed(self, key: str) -> Committed | None:
        marker = self._read_json(self._path(key, COMMIT_FILE))
        if marker is None:
            return None
        return Committed(key, marker, self.uri(key, marker["attempt"]))

    def list_keys(self) -> list[str]:
        import pyarrow.fs as pafs

        info = self.fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        return sorted(i.base_name for i in info if i.type == pafs.FileType.Directory)

    def read_texts(self, key: str, folder: str, suffix: str = ".json") -> dict[str, str]:
        """``{file name: text}`` of the ``*suffix`` files in ``folder`` of the committed ``key``,
        read in place (no download of the rest, e.g. weights); empty when there are none."""
        import pyarrow.fs as pafs

        done = self.committed(key)
        if done is None:
            return {}
        selector = pafs.FileSelector(self._path(key, done.marker["attempt"], folder), allow_not_found=True)
        out: dict[str, str] = {}
        for info in sorted(self.fs.get_file_info(selector), key=lambda i: i.base_name):
            if info.type == pafs.FileType.File and info.base_name.endswith(suffix):
                with self.fs.open_input_stream(info.path) as stream:
                    out[info.base_name] = stream.read().decode()
        return out

    def fetch(self, key: str, scratch: Path) -> Path:
        """A local folder with the committed files of ``key``: in place on a local disk, else
        downloaded once into ``scratch/<key>`` (a ``.complete`` file marks a finished download)."""
        import pyarrow.fs as pafs

        done = self.committed(key)
        if done is None:
            raise FileNotFoundError(f"artifact {key} is not committed in {self.root_uri}")
        attempt = done.marker["attempt"]
        if self.local:
            return self.local_dir(key, attempt)
        target = Path(scratch) / key
        stamp = target / ".complete"
        if stamp.is_file() and stamp.read_text() == attempt:
            return target
        tmp = Path(scratch) / f".{key}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        pafs.copy_files(self._path(key, attempt), str(tmp), source_filesystem=self.fs,
                        destination_filesystem=pafs.LocalFileSystem())
        (tmp / ".complete").write_text(attempt)
        try:
            os.replace(tmp, target)  # fails if another process of this node put it there first
        except OSError:
            if not (stamp.is_file() and stamp.read_text() == attempt):
                shutil.rmtree(target, ignore_errors=True)  # a stale or partial older download
                os.replace(tmp, target)
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    # ------------------------------------------------------------------ writing
    def lock(self, key: str):
        """A cross-process lock for producing ``key`` on a local disk; a no-op on remote storage."""
        import contextlib

        if not self.local:
            return contextlib.nullcontext()
        from filelock import FileLock

        Path(self.root).mkdir(parents=True, exist_ok=True)
        return FileLock(self._path(f"{key}.lock"))

    def _write_json(self, path: str, data: dict[str, Any]) -> None:
        text = json.dumps(data, indent=1, default=str).encode()
        if self.local:  # write then rename: atomic on one filesystem
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_bytes(text)
            os.replace(tmp, path)
        else:  # one PUT: an S3 object appears whole or not at all
            with self.fs.open_output_stream(path) as out:
                out.write(text)

    def commit(self, key: str, files: Path, record: dict[str, Any], definition: dict[str, Any]) -> Committed:
        """Upload ``files`` as a new attempt of ``key`` and commit it (unless another producer
        committed first: then theirs is kept and ours deleted)."""
        import pyarrow.fs as pafs

        attempt = f"attempt-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        self.fs.create_dir(self._path(key, attempt), recursive=True)
        self._write_json(self._path(key, DEFINITION_FILE), definition)
        pafs.copy_files(str(files), self._path(key, attempt), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        existing = self.committed(key)
        if existing is not None:
            self.fs.delete_dir(self._path(key, attempt))
            return existing
        marker = {**record, "attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(),
                  "committed_at": time.time()}
        self._write_json(self._path(key, COMMIT_FILE), marker)
        self._remove_stale_attempts(key, keep=attempt)
        return Committed(key, marker, self.uri(key, attempt))

    def _remove_stale_attempts(self, key: str, keep: str) -> None:
        """Attempts of killed producers (local disk only: there we hold the key's lock)."""
        if not self.local:
            return
        for entry in Path(self._path(key)).glob("attempt-*"):
            if entry.name != keep:
                shutil.rmtree(entry, ignore_errors=True)
