"""Where artifacts live: ``<storage>/artifacts/<key>/``, on a local disk or S3-compatible storage.

Storage is reached through ``pyarrow.fs`` as Ray Tune reaches it, so any URI Ray accepts
works here: a local path, ``s3://bucket/prefix`` (an S3-compatible endpoint comes from
``AWS_ENDPOINT_URL`` or the URI's ``?endpoint_override=host:port&scheme=http`` query), ...

Layout of one artifact::

    <storage>/artifacts/<key>/definition.json    what it is (kind, definition, identity)
                              <attempt>/...       the artifact's files, as the producer wrote them
                              COMMITTED.json      the commit marker: which attempt, metrics, time

Atomicity: a producer writes into a local scratch folder, uploads it under a fresh
``<attempt>`` id, and only then creates ``COMMITTED.json``. Readers look for the marker and read
the attempt it names, so a killed producer leaves an attempt nobody reads, and the next producer
starts a new one. The marker lists every file's sha256 and size; a fetch verifies them, so a
file truncated by a power loss or a partial copy is refused by name instead of being reused.
On a local disk the attempt's files and folders are fsync'd before the marker is made.

Concurrency: the marker is created only if absent, so the first producer wins and every reader
sees the same attempt: a hard link of a finished temporary file on a local disk (fails if the
marker exists), a conditional PUT (``If-None-Match: *``, which AWS S3, MinIO, GCS's XML API, R2
and moto support) on S3. The loser deletes its attempt and reads the winner's; the winner
deletes attempts that lost or were abandoned. On a local (or NFS) disk producers of one key
also serialise on a ``filelock`` next to it, so the artifact is made once. Other remote schemes
(no conditional create through pyarrow) fall back to check-then-write, which two producers can
both pass: a warning says so.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from resweep.errors import ResweepError
from resweep.fileio import fsync_dir, fsync_file, fsync_tree
from resweep.stages.scratch import node_cache
from resweep.uri import filesystem, is_remote, join_uri

logger = logging.getLogger("resweep.stages")

COMMIT_FILE = "COMMITTED.json"
DEFINITION_FILE = "definition.json"
ARTIFACTS_DIR = "artifacts"


class ArtifactCorrupt(ResweepError):
    """A committed artifact's file does not match the checksum or size its marker lists."""


def file_manifest(folder: Path) -> dict[str, dict[str, Any]]:
    """``{relative path: {"sha256", "size"}}`` of every file under ``folder``."""
    out: dict[str, dict[str, Any]] = {}
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        out[path.relative_to(folder).as_posix()] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_manifest(folder: Path, manifest: dict[str, dict[str, Any]], where: str) -> None:
    """Raise :class:`ArtifactCorrupt` naming the first file that is missing or differs."""
    for name, expected in manifest.items():
        path = Path(folder) / name
        if not path.is_file():
            raise ArtifactCorrupt(f"artifact {where}: file {name} is missing")
        size = path.stat().st_size
        if size != expected["size"]:
            raise ArtifactCorrupt(
                f"artifact {where}: {name} has {size} bytes, its commit marker says {expected['size']}"
            )
        if sha256_file(path) != expected["sha256"]:
            raise ArtifactCorrupt(f"artifact {where}: {name} does not match the sha256 its commit marker lists")


#: folders of committed attempts this process verified against their marker (a local store's,
#: read in place, or a copy in a node cache): each is hashed once per process, not per read
_VERIFIED: set[str] = set()


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

    def fetch(self, key: str, cache: Path | None = None) -> Path:
        """A local folder with the committed files of ``key``, verified against its marker.

        On a local disk: the committed folder itself (it never changes after commit). Remote:
        a copy in this node's artifact cache (``cache``, default :func:`node_cache`), at
        ``<cache>/<key>/<attempt>/``: downloaded once per node under a file lock (the trials
        of a node fetching one key wait for one download), into a temporary folder that is
        verified, fsync'd and renamed into place, so a copy that exists is whole. A copy found
        corrupt (a disk fault, a hand edit) is removed and downloaded again.
        """
        done = self.committed(key)
        if done is None:
            raise FileNotFoundError(f"artifact {key} is not committed in {self.root_uri}")
        attempt = done.marker["attempt"]
        manifest = done.marker.get("files")  # absent in markers written before checksums
        if self.local:
            folder = self.local_dir(key, attempt)
            self._verify_once(folder, manifest, f"{key} ({folder})")
            return folder
        from filelock import FileLock

        folder_of_key = Path(cache or node_cache()) / key
        target = folder_of_key / attempt
        folder_of_key.mkdir(parents=True, exist_ok=True)
        if str(target) in _VERIFIED and target.is_dir():
            return target
        with FileLock(str(folder_of_key) + ".lock"):
            if target.is_dir():
                try:
                    self._verify_once(target, manifest, f"{key} (node cache {target})")
                    return target
                except ArtifactCorrupt as exc:
                    logger.warning("%s; downloading it again", exc)
                    shutil.rmtree(target, ignore_errors=True)
            self._download(key, attempt, manifest, target)
        return target

    @staticmethod
    def _verify_once(folder: Path, manifest: dict[str, Any] | None, where: str) -> None:
        if manifest is not None and str(folder) not in _VERIFIED:
            verify_manifest(folder, manifest, where)
            _VERIFIED.add(str(folder))

    def _download(self, key: str, attempt: str, manifest: dict[str, Any] | None, target: Path) -> None:
        """Copy the committed attempt to ``target``: into a temporary sibling, verified and
        fsync'd, then renamed (a killed download leaves only a ``.tmp-*`` folder, removed here)."""
        import pyarrow.fs as pafs

        for stale in target.parent.glob(".tmp-*"):  # we hold the lock: nobody is writing these
            shutil.rmtree(stale, ignore_errors=True)
        tmp = target.parent / f".tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            pafs.copy_files(self._path(key, attempt), str(tmp), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
            if manifest is not None:
                verify_manifest(tmp, manifest, f"{key} ({self.uri(key, attempt)})")
            fsync_tree(tmp)
            os.replace(tmp, target)
            fsync_dir(target.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if manifest is not None:
            _VERIFIED.add(str(target))

    # ------------------------------------------------------------------ writing
    def lock(self, key: str):
        """A cross-process lock for producing ``key`` on a local disk; a no-op on remote storage."""
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
            fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(Path(path).parent)
        else:  # one PUT: an S3 object appears whole or not at all
            with self.fs.open_output_stream(path) as out:
                out.write(text)

    def commit(self, key: str, files: Path, record: dict[str, Any], definition: dict[str, Any]) -> Committed:
        """Upload ``files`` as a new attempt of ``key`` and commit it, unless another producer
        committed first: then theirs is kept, ours deleted, and theirs returned."""
        import pyarrow.fs as pafs

        attempt = f"attempt-{time.strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:8]}"
        manifest = file_manifest(Path(files))
        self.fs.create_dir(self._path(key, attempt), recursive=True)
        self._write_json(self._path(key, DEFINITION_FILE), definition)
        pafs.copy_files(str(files), self._path(key, attempt), source_filesystem=pafs.LocalFileSystem(),
                        destination_filesystem=self.fs)
        if self.local:
            fsync_tree(self._path(key, attempt))
            fsync_dir(self._path(key))
        existing = self.committed(key)  # cheap early exit; the create below is what decides
        marker = {**record, "attempt": attempt, "host": socket.gethostname(), "pid": os.getpid(),
                  "committed_at": time.time(), "files": manifest}
        if existing is not None or not self._create_marker(key, marker):
            with contextlib.suppress(OSError):  # the winner may have deleted it already
                self.fs.delete_dir(self._path(key, attempt))
            winner = self.committed(key)
            assert winner is not None, f"the commit marker of {key} vanished"
            return winner
        self._remove_stale_attempts(key, keep=attempt)
        return Committed(key, marker, self.uri(key, attempt))

    def _create_marker(self, key: str, marker: dict[str, Any]) -> bool:
        """Create ``COMMITTED.json`` only if it does not exist; whether ours is the one."""
        path = self._path(key, COMMIT_FILE)
        text = json.dumps(marker, indent=1, default=str).encode()
        if self.local:
            tmp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
            Path(tmp).write_bytes(text)
            fsync_file(tmp)
            try:
                os.link(tmp, path)  # atomic create-if-absent, whole file at once
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            fsync_dir(Path(path).parent)
            return True
        if urlsplit(self.storage).scheme in ("s3", "s3a"):
            return self._s3_put_if_absent(path, text)
        logger.warning(
            "%s: no conditional create for this storage scheme; two producers committing the same "
            "artifact at the same moment could both win", self.root_uri,
        )
        if self.committed(key) is not None:
            return False
        self._write_json(path, marker)
        return True

    def _s3_put_if_absent(self, path: str, body: bytes) -> bool:
        """A conditional PUT (``If-None-Match: *``) of ``bucket/key`` = ``path``."""
        from botocore.exceptions import ClientError

        client = self._s3_client()
        bucket, _, object_key = path.partition("/")
        for attempt in range(8):
            try:
                client.put_object(Bucket=bucket, Key=object_key, Body=body, IfNoneMatch="*")
                return True
            except ClientError as exc:
                code = exc.response.get("Error", {}).get("Code", "")
                status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
                if code == "PreconditionFailed" or status == 412:
                    return False
                # 409: a concurrent conditional write is in flight; S3 asks for a retry
                if code == "ConditionalRequestConflict" or status == 409:
                    time.sleep(0.05 * (attempt + 1))
                    continue
                raise
        raise ResweepError(f"could not create {path}: the storage kept reporting a conflicting write")

    def _s3_client(self) -> Any:
        """boto3's client for this storage: the URI's ``endpoint_override``/``scheme``/``region``
        query when given, else boto3's own configuration (``AWS_ENDPOINT_URL``, profiles)."""
        try:
            import boto3
        except ImportError as exc:
            raise ResweepError("S3 storage needs boto3 (pip install boto3)") from exc
        query = {k: v[-1] for k, v in parse_qs(urlsplit(self.storage).query).items()}
        endpoint = query.get("endpoint_override")
        if endpoint and "://" not in endpoint:
            endpoint = f"{query.get('scheme', 'https')}://{endpoint}"
        return boto3.client("s3", endpoint_url=endpoint or None, region_name=query.get("region"))

    def _remove_stale_attempts(self, key: str, keep: str) -> None:
        """Attempts of killed or losing producers: nobody will ever read them (the marker names
        ``keep``, and a producer still uploading one loses its conditional create and deletes it)."""
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(self._path(key), allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if info.type == pafs.FileType.Directory and info.base_name.startswith("attempt-") \
                    and info.base_name != keep:
                with contextlib.suppress(OSError):  # a loser deleting its own at the same time
                    self.fs.delete_dir(info.path)
