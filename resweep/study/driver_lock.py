"""One driver per study: ``<study>/driver.lock`` while a ``run`` or ``resume`` drives it.

Two drivers on one folder would overwrite each other's results files and run trials twice. The
lock file is created exclusively (``O_EXCL``) and names its holder (host, pid, start); a thread
refreshes its heartbeat. A second driver refuses in one line, unless the holder is gone: its
process no longer exists (same host), or its heartbeat is older than ``STALE_AFTER_S`` (a
driver lost with its machine). A stale lock is taken over by a rename, so of two drivers
taking over at once, one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resweep.errors import ResweepError
from resweep.study.layout import DRIVER_LOCK as LOCK_FILE

HEARTBEAT_S = 15.0
STALE_AFTER_S = 120.0


class StudyLocked(ResweepError):
    """Another driver runs this study."""


def _holder() -> dict[str, Any]:
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": now, "heartbeat": now,
            "token": uuid.uuid4().hex}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the holder may still be driving (a dead process on this host is not)."""
    if time.time() - float(holder.get("heartbeat", 0)) > STALE_AFTER_S:
        return False
    if holder.get("host") == socket.gethostname():
        try:
            os.kill(int(holder["pid"]), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, KeyError, ValueError, TypeError):
            return True
    return True


def _write_new(path: Path, data: dict[str, Any]) -> bool:
    """Create ``path`` with ``data`` unless it exists; whether we did."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)
    return True


@contextlib.contextmanager
def driver_lock(study_dir: str | Path) -> Iterator[dict[str, Any]]:
    """Hold the study's driver lock for the block (see the module docstring)."""
    root = Path(study_dir)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_FILE
    me = _holder()
    if not _write_new(path, me):
        other = _read(path)
        if other is not None and _alive(other):
            age = time.time() - float(other.get("heartbeat", 0))
            raise StudyLocked(
                f"{root} is being driven by pid {other.get('pid')} on {other.get('host')} "
                f"(heartbeat {age:.0f} s ago); one driver per study. If that driver is gone, "
                f"its lock goes stale after {STALE_AFTER_S:.0f} s, or remove {path}"
            )
        # stale: replace it atomically, then check that ours is the one that stuck
        tmp = root / f".{LOCK_FILE}.{me['token']}"
        tmp.write_text(json.dumps(me))
        os.replace(tmp, path)
        time.sleep(0.05)
        if (_read(path) or {}).get("token") != me["token"]:
            raise StudyLocked(f"{root}: another driver took over the stale lock {path} at the same moment")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(HEARTBEAT_S):
            current = _read(path)
            if current is None or current.get("token") != me["token"]:
                return  # taken over (we were presumed dead): stop touching it
            current["heartbeat"] = time.time()
            tmp = root / f".{LOCK_FILE}.{me['token']}"
            tmp.write_text(json.dumps(current))
            os.replace(tmp, path)

    thread = threading.Thread(target=beat, name="resweep-driver-lock", daemon=True)
    thread.start()
    try:
        yield me
    finally:
        stop.set()
        thread.join(timeout=5)
        if (_read(path) or {}).get("token") == me["token"]:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
