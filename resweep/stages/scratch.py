"""A node's local scratch: its artifact cache (remote artifacts downloaded once per node, shared
by its trials) and the scratch folders of running trials, deleted when they end.

``$RESWEEP_SCRATCH`` (default ``<tmp>/resweep-scratch``) on each node::

    artifacts/<key>/<attempt>/     a verified copy of a committed artifact (ArtifactStore.fetch)
    artifacts/<key>.lock           held while one process of the node downloads it
    trials/<trial>-<host>-<pid>/   a running trial's scratch (where it makes a stage)
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path


def scratch_root() -> Path:
    """This node's local scratch: ``$RESWEEP_SCRATCH``, else ``<tmp>/resweep-scratch`` (each
    node has its own). It holds the node's artifact cache (:func:`node_cache`) and the scratch
    folders of running trials (:func:`trial_scratch`), nothing else."""
    import tempfile

    return Path(os.environ.get("RESWEEP_SCRATCH") or Path(tempfile.gettempdir()) / "resweep-scratch")


def node_cache() -> Path:
    """``<scratch_root>/artifacts``: remote artifacts downloaded once per node, as
    ``<key>/<attempt>/``, shared by every trial and worker of the node (one copy per artifact,
    however many trials read it)."""
    return scratch_root() / "artifacts"


@contextlib.contextmanager
def trial_scratch(trial_id: str) -> Iterator[Path]:
    """A trial's own scratch folder (``<scratch_root>/trials/<trial>-<host>-<pid>``), deleted
    when the block ends, whether the trial finished or raised; the folders of killed trial
    processes of this host are deleted by the next trial that starts on it."""
    root = scratch_root() / "trials"
    host = socket.gethostname()
    _remove_dead_scratch(root, host)
    safe = "".join(c if c.isalnum() or c in "_.-" else "_" for c in str(trial_id))
    path = root / f"{safe}-{host}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _remove_dead_scratch(root: Path, host: str) -> None:
    """Scratch folders whose process (on this host) no longer runs: a SIGKILLed trial's."""
    if not root.is_dir():
        return
    for folder in root.iterdir():
        name, _, pid = folder.name.rpartition("-")
        if not name.endswith(f"-{host}") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(folder, ignore_errors=True)
        except PermissionError:  # alive, someone else's
            pass
