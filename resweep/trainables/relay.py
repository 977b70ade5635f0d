"""What a trial produces for the driver travels through Ray, never through a shared disk.

On a cluster the nodes share only the study's storage: a trial that wrote ``log.txt`` or its
saved images to a driver path would write them on its own node. So each study (and each
``resweep train`` run) has one small relay actor (no CPU, pinned to the driver's node, named
after the study folder): trials push their log lines (rank 0's, and any rank's errors), their
one-line error summary, their saved images and (``resweep train``) their reports to it; the
driver drains it about once a second and writes the files into its own folder, where
``resweep logs``, the warning relay, the one-line error and the report find them.

Pushes never block training: lines are buffered in the trial and sent by a background thread
as one ``.remote()`` call per batch (a bounded number in flight); when the driver falls behind
the buffer is capped and the dropped lines are counted in the log. Only the end of a trial
waits (a few seconds at most) until what it sent has reached the actor, so the driver holds a
trial's last lines, its error and its images when Tune reports the trial ended.
"""

from __future__ import annotations

import contextlib
import hashlib
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any

NAMESPACE = "resweep"
FLUSH_INTERVAL_S = 0.5
MAX_IN_FLIGHT = 8  # pushes not yet received by the actor, per sender
MAX_BUFFERED_TEXT = 4 << 20  # a sender's unsent log text (bytes) before lines are dropped
MAX_PENDING_TEXT = 16 << 20  # the actor's undrained log text per trial before lines are dropped
FILES_BATCH_BYTES = 32 << 20  # saved images are sent in batches of about this size
CLOSE_TIMEOUT_S = 60.0


def relay_name(key: str) -> str:
    """The relay actor of a study folder / run folder (the driver lock keeps one driver on it)."""
    return "relay-" + hashlib.sha256(str(key).encode()).hexdigest()[:20]


class _Pending:
    __slots__ = ("text", "error", "files", "records", "dropped")

    def __init__(self) -> None:
        self.text: list[str] = []
        self.error: dict[str, Any] | None = None
        self.files: dict[str, bytes] = {}
        self.records: list[dict[str, Any]] = []
        self.dropped = 0


class RelayActor:
    """The actor's body: what senders pushed, per source (a trial id), until drained."""

    def __init__(self) -> None:
        self.pending: dict[str, _Pending] = {}
        self.text_bytes: dict[str, int] = {}
        self.files_seen: set[str] = set()

    def push(self, source: str, text: str = "", error: dict[str, Any] | None = None,
             files: dict[str, bytes] | None = None, records: list[dict[str, Any]] | None = None) -> None:
        p = self.pending.setdefault(source, _Pending())
        if text:
            size = self.text_bytes.get(source, 0)
            if size + len(text) > MAX_PENDING_TEXT:  # the driver is not draining: count, keep going
                p.dropped += text.count("\n")
            else:
                p.text.append(text)
                self.text_bytes[source] = size + len(text)
        if error is not None:
            p.error = error
        if files:
            p.files.update(files)
            self.files_seen.update(files)
        if records:
            p.records.extend(records)

    def known(self, names: list[str]) -> list[str]:
        """Of these image paths, those already received (the ground truth every trial saves)."""
        return [n for n in names if n in self.files_seen]

    def drain(self) -> dict[str, dict[str, Any]]:
        out = {}
        for source, p in self.pending.items():
            text = "".join(p.text)
            if p.dropped:
                text += f"[relay: {p.dropped} log line(s) dropped: the driver fell behind]\n"
            out[source] = {"text": text, "error": p.error, "files": p.files, "records": p.records}
        self.pending.clear()
        self.text_bytes.clear()
        return out


def start_relay(key: str) -> Any:
    """The driver's relay actor for ``key`` (created on this node, or the live one)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    actor = ray.remote(RelayActor).options(
        name=relay_name(key), namespace=NAMESPACE, get_if_exists=True, num_cpus=0, max_restarts=0,
        # on the driver's node: it goes with the driver, never with a (spot) worker node
        scheduling_strategy=NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False),
    )
    return actor.remote()


def drain(actor: Any, timeout_s: float = 30.0) -> dict[str, dict[str, Any]]:
    import ray

    return ray.get(actor.drain.remote(), timeout=timeout_s)


def stop_relay(actor: Any) -> None:
    import ray

    with contextlib.suppress(Exception):
        ray.kill(actor)


class RelaySender:
    """A trial's (or a Ray Train worker's) end of the relay, for one source (the trial id).

    :meth:`write` takes log text (whole lines) and returns at once; :meth:`record` takes a
    report for ``resweep train``'s curves (never dropped); :meth:`error` and :meth:`send_files`
    wait until the actor has them; :meth:`close` sends the rest and waits (bounded).
    """

    def __init__(self, name: str, source: str):
        import ray

        self.actor = ray.get_actor(name, namespace=NAMESPACE)
        self.source = source
        self._lock = threading.Lock()
        self._text: list[str] = []
        self._text_bytes = 0
        self._records: list[dict[str, Any]] = []
        self._dropped = 0
        self._in_flight: list[Any] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="resweep-relay", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ senders' calls
    def write(self, text: str) -> None:
        with self._lock:
            if self._text_bytes + len(text) > MAX_BUFFERED_TEXT:
                self._dropped += text.count("\n")
                return
            self._text.append(text)
            self._text_bytes += len(text)

    def record(self, metrics: dict[str, Any]) -> None:
        with self._lock:
            self._records.append(dict(metrics))

    def add(self, metrics: dict[str, Any]) -> None:  # a RunRecorder's method: the reporters call it
        self.record(metrics)

    def error(self, summary: dict[str, Any]) -> None:
        self._flush(force=True)
        self._wait([self.actor.push.remote(self.source, error=summary)])

    def send_files(self, root: Path) -> int:
        """Every file under ``root`` (paths relative to it), but those the actor already has."""
        import ray

        files = sorted(p for p in Path(root).rglob("*") if p.is_file())
        names = [p.relative_to(root).as_posix() for p in files]
        if not names:
            return 0
        known = set(ray.get(self.actor.known.remote(names), timeout=CLOSE_TIMEOUT_S))
        batch: dict[str, bytes] = {}
        size = sent = 0
        for path, name in zip(files, names, strict=True):
            if name in known:
                continue
            batch[name] = path.read_bytes()
            size += len(batch[name])
            if size >= FILES_BATCH_BYTES:
                self._wait([self.actor.push.remote(self.source, files=batch)])
                sent, batch, size = sent + len(batch), {}, 0
        if batch:
            self._wait([self.actor.push.remote(self.source, files=batch)])
            sent += len(batch)
        return sent

    def close(self) -> None:
        """Send what is buffered and wait until the actor has everything (bounded)."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._flush(force=True)
        with self._lock:
            refs, self._in_flight = self._in_flight, []
        self._wait(refs)

    # ------------------------------------------------------------------ internals
    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(FLUSH_INTERVAL_S)
            with contextlib.suppress(Exception):  # a lost driver must not end the trial
                self._flush()

    def _flush(self, force: bool = False) -> None:
        import ray

        with self._lock:
            if self._in_flight:
                _, self._in_flight = ray.wait(self._in_flight, num_returns=len(self._in_flight), timeout=0)
            if not force and len(self._in_flight) >= MAX_IN_FLIGHT:
                return  # the actor is behind: keep buffering (bounded by MAX_BUFFERED_TEXT)
            text = "".join(self._text)
            if self._dropped:
                text += f"[relay: {self._dropped} log line(s) dropped: the driver fell behind]\n"
            records = self._records
            if not text and not records:
                return
            self._text, self._text_bytes, self._records, self._dropped = [], 0, [], 0
            self._in_flight.append(self.actor.push.remote(self.source, text=text, records=records))

    def _wait(self, refs: list[Any]) -> None:
        import ray

        with contextlib.suppress(Exception):  # the driver is gone: nothing to deliver to
            ray.get(refs, timeout=CLOSE_TIMEOUT_S)


@contextlib.contextmanager
def relay_sender(name: str | None, source: str) -> Iterator[RelaySender | None]:
    """A :class:`RelaySender` closed on exit (None without a relay: nothing is sent)."""
    if not name:
        yield None
        return
    try:
        sender = RelaySender(name, source)
    except ValueError:  # no such actor (a driver that did not start it): the caller writes itself
        import warnings

        warnings.warn(f"no relay actor {name!r}: {source} writes its files on this node", stacklevel=3)
        yield None
        return
    try:
        yield sender
    finally:
        sender.close()


@contextlib.contextmanager
def saved_images(relay: RelaySender | None, subdir: str | None, fallback: Path | None) -> Iterator[Path | None]:
    """Where the engine saves a run's final images: a local folder whose files go to the driver
    through ``relay`` when the run ends well (``<images>/<subdir>/...`` and the references
    beside it, ``_gt``, ``_baseline``); without a relay, ``fallback`` itself."""
    if relay is None or not subdir:
        yield fallback if subdir else None
        return
    with tempfile.TemporaryDirectory(prefix="resweep-images-") as tmp:
        yield Path(tmp) / subdir
        relay.send_files(Path(tmp))


def write_relayed(item: dict[str, Any], *, log_path: Path | None, error_path: Path | None,
                  image_root: Path | None) -> None:
    """Write one source's drained batch into the driver's folder."""
    from resweep.fileio import write_bytes_atomic, write_text_atomic

    if item.get("text") and log_path is not None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "a", encoding="utf-8") as handle:
            handle.write(item["text"])
    if item.get("error") is not None and error_path is not None:
        import json

        write_text_atomic(error_path, json.dumps(item["error"], indent=2))
    if item.get("files") and image_root is not None:
        for name, data in item["files"].items():
            path = _inside(image_root, name)
            if path is not None:
                write_bytes_atomic(path, data)


def _inside(root: Path, name: str) -> Path | None:
    """``root/name`` for a relative path that stays inside ``root`` (names come from trials)."""
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or any(p in ("..", "") for p in parts):
        return None
    return Path(root, *parts)
