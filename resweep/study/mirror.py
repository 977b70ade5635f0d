"""The study folder mirrored to its remote storage as the study runs, and fetched back from it.

With ``storage: s3://...`` Ray Tune keeps its experiment (``tune/``) in the storage, but the
study's own files (``study.yaml``, ``study.json``, the Parquet parts, trial logs, images,
``optuna.db``) are written by the driver into its local study folder. :class:`StudyMirror`
copies them to the same storage while the study runs, so a driver lost with its machine loses
at most the last few seconds: ``resweep resume s3://.../NAME`` on another machine fetches the
folder back (:func:`fetch_study`) and continues with Tune's state from the storage.

Layout on the storage: the study folder's files at the storage's root, beside Tune's ``tune/``,
``train_runs/`` and the stages' ``artifacts/`` (never mirrored, never fetched).

Cost of one sync: it uploads only files new or changed since the last one (size and mtime), and
looks only at what can still change: the top-level files, the dataset folders (a running
trial's own part plus chunks of many ended trials, :mod:`resweep.study.parts`), and the
``trials/<id>/`` and ``images/<id>/`` folders of trials not yet settled (running, or ended since
the last sync). A dataset part removed locally (moved into a chunk) is deleted from the storage
after the chunk is uploaded, as the local writer does. ``optuna.db`` is copied with sqlite's
backup API (a consistent snapshot while the searcher writes) and uploaded when it changed.
No Ray, no torch: ``resweep status``/``report`` use :func:`fetch_study`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from resweep.errors import ResweepError
from resweep.study.layout import (
    CACHE_DIR,
    DRIVER_LOCK,
    IMAGES_DIR,
    META_FILE,
    OPTUNA_DB,
    PARQUET_FILES,
    REPORT_DIR,
    STUDY_FILE,
    TRAIN_RUNS_DIR,
    TRIAL_DIRS,
    TUNE_DIR,
    TUNE_EXTENSION_PREFIX,
)
from resweep.uri import filesystem, join_uri

#: top-level names of the study folder that are not mirrored: Tune's and Ray Train's folders
#: and the artifacts already live in the storage; caches, the report and the lock are local;
#: optuna.db goes through sqlite's backup API instead of a file copy
NOT_MIRRORED = frozenset({TUNE_DIR, TRAIN_RUNS_DIR, "artifacts", CACHE_DIR, REPORT_DIR, DRIVER_LOCK, OPTUNA_DB})
#: folders holding one subfolder per trial (plus shared ones such as images/_gt)
PER_TRIAL = (TRIAL_DIRS, IMAGES_DIR)
#: seconds between two syncs while the study runs (a trial's end asks for one at once)
MIRROR_INTERVAL_S = float(os.environ.get("RESWEEP_MIRROR_INTERVAL_S", "10"))


def _skip(name: str) -> bool:
    # temporary files of atomic writes (".<name>-xxxx.tmp") and of a part being moved
    return name.startswith(".") or name.endswith((".tmp", "~"))


def _files(folder: Path) -> Iterable[Path]:
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not _skip(d)]
        for name in filenames:
            if not _skip(name):
                yield Path(dirpath, name)


class StudyMirror:
    """Copies a study folder to a remote storage, a sync at a time (see the module's doc).

    :meth:`request` is what the driver calls (cheap: a sync runs in a background thread, at most
    every ``interval_s`` seconds, at once after a trial started or ended); :meth:`close` waits for it
    and syncs a last time. A failed upload is warned about once and retried at the next sync."""

    def __init__(self, study_dir: str | Path, storage: str, interval_s: float = MIRROR_INTERVAL_S):
        self.root = Path(study_dir)
        self.storage = storage
        self.interval_s = interval_s
        self.fs, self.remote = filesystem(storage)
        self._synced: dict[str, tuple[int, int]] = {}  # relative path -> (size, mtime_ns) uploaded
        self._settled: set[str] = set()  # "trials/<id>", "images/<id>": nothing more will change
        self._active: set[str] = set()  # trial ids running (their folders are never settled)
        self._touched: set[str] = set()  # started or ended since the running sync began
        self._ended: set[str] = set()  # trial ids that ended while this driver ran
        self._first = True
        self._warned = False
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._again = False
        self._due = True
        self._last_start = 0.0
        self._db_state: tuple[Any, ...] | None = None

    # ------------------------------------------------------------------ driver side
    def trial_active(self, trial_id: str) -> None:
        with self._lock:
            self._active.add(trial_id)
            self._ended.discard(trial_id)
            self._touched.add(trial_id)
            self._settled -= {f"{d}/{trial_id}" for d in PER_TRIAL}
            # Optuna has just written the ask to optuna.db: the copy should not lag behind the
            # searcher state Tune saves in the storage (a resumed searcher tells that trial)
            self._due = True

    def trial_ended(self, trial_id: str) -> None:
        with self._lock:
            self._active.discard(trial_id)  # its folders get one more look, then are settled
            self._ended.add(trial_id)
            self._touched.add(trial_id)
            self._due = True

    def request(self) -> None:
        """A sync in the background if one is due (never waits for the storage)."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                self._again = self._again or self._due
                return
            if not self._due and time.monotonic() - self._last_start < self.interval_s:
                return
            self._due = False
            self._last_start = time.monotonic()
            self._thread = threading.Thread(target=self._run, name="resweep-mirror", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Wait for a running sync, then sync everything (the end of the driver's run)."""
        thread = self._thread
        if thread is not None:
            thread.join()
        with self._lock:  # nothing runs any more: one last look at everything
            self._active.clear()
            self._settled.clear()
        self.sync()

    def _run(self) -> None:
        while True:
            self.sync()
            with self._lock:
                if not self._again:
                    return
                self._again = False

    # ------------------------------------------------------------------ one sync
    def sync(self) -> bool:
        """Upload what changed since the last sync; False (warned once) when something failed."""
        try:
            self._sync()
        except Exception as exc:  # a storage hiccup must never stop the study: next sync retries
            if not self._warned:
                self._warned = True
                print(f"resweep: warning: could not mirror the study folder to {self.storage}: "
                      f"{type(exc).__name__}: {exc} (retried at every flush; said once)", file=sys.stderr)
            return False
        return True

    def _sync(self) -> None:
        with self._lock:
            first = self._first
            active, ended = set(self._active), set(self._ended)
            self._touched.clear()
        self._sync_files(first, active, ended)  # on failure nothing is marked synced: all retried
        self._first = False
        self._sync_optuna_db()

    def _sync_files(self, first: bool, active: set[str], ended: set[str]) -> None:
        changed: list[str] = []
        datasets: dict[str, set[str]] = {}
        newly_settled: list[str] = []
        if not self.root.is_dir():
            return
        for entry in os.scandir(self.root):
            name = entry.name
            if name in NOT_MIRRORED or name.startswith(TUNE_EXTENSION_PREFIX) or _skip(name):
                continue
            if entry.is_file():
                changed += self._if_changed(Path(entry.path))
            elif name in PARQUET_FILES:
                names = datasets[name] = set()
                for part in os.scandir(entry.path):
                    if part.is_file() and not _skip(part.name):
                        names.add(f"{name}/{part.name}")
                        changed += self._if_changed(Path(part.path))
            elif name in PER_TRIAL:
                for sub in os.scandir(entry.path):
                    key = f"{name}/{sub.name}"
                    if key in self._settled or _skip(sub.name):
                        continue
                    changed += [c for f in _files(Path(sub.path)) for c in self._if_changed(f)]
                    # the folder of a trial that ended is settled once looked at after its end
                    # (the first sync: of every trial not running, those of an earlier driver);
                    # shared folders (images/_gt, _baseline) are looked at every time. A trial
                    # that starts again is unsettled by trial_active
                    if sub.name not in active and not sub.name.startswith("_") and (first or sub.name in ended):
                        newly_settled.append(key)
            elif entry.is_dir():  # anything else the study folder holds
                changed += [c for f in _files(Path(entry.path)) for c in self._if_changed(f)]
        for rel in changed:
            self._upload(rel)
        self._delete_stale(datasets, first)
        with self._lock:  # not a trial that started or ended while we looked: it may have changed since
            self._settled.update(k for k in newly_settled if k.split("/", 1)[1] not in self._touched)

    def _if_changed(self, path: Path) -> list[str]:
        try:
            st = path.stat()
        except FileNotFoundError:  # replaced or removed while we looked: the next sync sees it
            return []
        rel = path.relative_to(self.root).as_posix()
        return [] if self._synced.get(rel) == (st.st_size, st.st_mtime_ns) else [rel]

    def _upload(self, rel: str) -> None:
        path = self.root / rel
        try:
            st = path.stat()
            data = path.read_bytes()
        except FileNotFoundError:
            return
        with self.fs.open_output_stream(f"{self.remote}/{rel}") as out:
            out.write(data)
        self._synced[rel] = (st.st_size, st.st_mtime_ns)

    def _delete_stale(self, datasets: dict[str, set[str]], first: bool) -> None:
        """Parts gone from the local dataset folders (moved into chunks) leave the storage too,
        after the chunks that hold their rows were uploaded: a reader's precedence rules pick a
        trial's own part over a chunk, so a stale part would win."""
        import pyarrow.fs as pafs

        for name, present in datasets.items():
            if first:  # parts a previous driver uploaded and this one's folder no longer has
                infos = self.fs.get_file_info(pafs.FileSelector(f"{self.remote}/{name}", allow_not_found=True))
                remote = {f"{name}/{i.base_name}" for i in infos if i.type == pafs.FileType.File}
            else:
                remote = {rel for rel in self._synced if rel.startswith(name + "/")}
            for rel in sorted(remote - present):
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(f"{self.remote}/{rel}")
                self._synced.pop(rel, None)

    def _sync_optuna_db(self) -> None:
        db = self.root / OPTUNA_DB
        if not db.is_file():
            return
        state = tuple(
            (st.st_size, st.st_mtime_ns) if (st := _stat(db.with_name(db.name + s))) else None
            for s in ("", "-wal")
        )
        if state == self._db_state:
            return
        with tempfile.TemporaryDirectory(prefix="resweep-optuna-") as tmp:
            copy = Path(tmp) / OPTUNA_DB
            backup_sqlite(db, copy)
            with self.fs.open_output_stream(f"{self.remote}/{OPTUNA_DB}") as out:
                out.write(copy.read_bytes())
        self._db_state = state


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:
        return None


def backup_sqlite(source: Path, dest: Path) -> None:
    """A consistent copy of a sqlite database that another connection may be writing."""
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    try:
        out = sqlite3.connect(dest)
        try:
            src.backup(out)
        finally:
            out.close()
    finally:
        src.close()


# --------------------------------------------------------------------------- fetching back
def fetch_study(uri: str, dest: str | Path, only: Iterable[str] | None = None) -> Path:
    """Copy the study folder mirrored at ``uri`` into ``dest`` (a new folder; written beside it
    first and renamed, so an interrupted fetch leaves nothing half made). ``only``: these
    top-level names or sub-paths (``trials/<id>``) instead of everything mirrored."""
    import pyarrow.fs as pafs

    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise ResweepError(f"{dest} already exists; fetch the study from {uri} into a new folder")
    fs, root = filesystem(uri)
    top = fs.get_file_info(pafs.FileSelector(root, allow_not_found=True))
    names = {i.base_name: i for i in top}
    if META_FILE not in names and STUDY_FILE not in names:
        raise ResweepError(
            f"{uri} holds no study ({STUDY_FILE} and {META_FILE} missing): is it the study's storage, "
            "and did its driver mirror there (it does with a remote storage, from its first seconds)?"
        )
    wanted = [w.strip("/") for w in only] if only is not None else [
        n for n in names if n not in NOT_MIRRORED or n == OPTUNA_DB
    ]
    staging = dest.with_name(dest.name + ".fetch~")
    shutil.rmtree(staging, ignore_errors=True)
    for rel in wanted:
        info = fs.get_file_info(f"{root}/{rel}")
        if info.type == pafs.FileType.File:
            _download(fs, info.path, staging / rel)
        elif info.type == pafs.FileType.Directory:
            for sub in fs.get_file_info(pafs.FileSelector(info.path, recursive=True)):
                if sub.type == pafs.FileType.File:
                    _download(fs, sub.path, staging / rel / sub.path[len(info.path) + 1:])
    staging.mkdir(parents=True, exist_ok=True)
    if dest.exists():
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, dest)
    return dest


def _download(fs: Any, remote: str, local: Path) -> None:
    local.parent.mkdir(parents=True, exist_ok=True)
    with fs.open_input_stream(remote) as src:
        local.write_bytes(src.readall())


def read_remote_text(uri: str, name: str) -> str:
    """One small file of the study mirrored at ``uri`` (``study.yaml``), as text."""
    fs, root = filesystem(uri)
    try:
        with fs.open_input_stream(f"{root}/{name}") as src:
            return src.readall().decode("utf-8")
    except FileNotFoundError:
        raise ResweepError(f"{join_uri(uri, name)} not found: {uri} holds no mirrored study") from None
