"""A trial's log (``<study>/trials/<trial_id>/log.txt``) and its one-line error summary.

Everything a trial says goes there: the engine's progress lines, methods' messages, Python
warnings and ``resweep.*`` log records, and the full traceback when it raises. A trial hands
its lines to a ``sink`` (in a study or a ``resweep train`` run: the relay to the driver, see
``resweep.trainables.relay``, which writes the file on the driver's disk) or appends them to a
file itself. The driver shows warnings and errors from them (``resweep.study.callback``);
``resweep logs`` prints one. Ray-free.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from resweep.fileio import write_text_atomic

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def format_line(level: str, message: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    lines = str(message).rstrip("\n").splitlines() or [""]
    # continuation lines are indented so a reader (and the driver's tail) keeps them together
    return "\n".join([f"{stamp} {level:<7} {lines[0]}", *(f"    {line}" for line in lines[1:])]) + "\n"


def parse_level(line: str) -> str | None:
    """The level of a line written by :func:`format_line` (None for continuation lines)."""
    parts = line.split(" ", 3)
    if len(parts) >= 3 and parts[2] in LEVELS:
        return parts[2]
    return None


#: where a trial's error summary goes: a file (error.json) or a callable (the relay)
ErrorTarget = str | Path | Callable[[dict[str, Any]], None] | None


class TrialLog:
    """Timestamped lines to ``sink`` (a callable taking whole lines of text) or appended to
    the file ``path``; safe from several threads. ``min_level``: lines below it are dropped
    (other ranks than 0 of a run keep only their errors)."""

    def __init__(self, path: str | Path | None = None, *, sink: Callable[[str], None] | None = None,
                 min_level: str = "DEBUG"):
        self.path = Path(path) if path else None
        self.sink = sink
        self._min = LEVELS.index(min_level)
        self._lock = threading.Lock()
        if self.path is not None and sink is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def active(self) -> bool:
        return self.sink is not None or self.path is not None

    def write(self, level: str, message: str) -> None:
        if not self.active or LEVELS.index(level) < self._min:
            return
        text = format_line(level, message)
        if self.sink is not None:
            self.sink(text)
            return
        with self._lock, open(self.path, "a", encoding="utf-8") as handle:
            handle.write(text)

    def info(self, message: str) -> None:
        self.write("INFO", message)

    def warning(self, message: str) -> None:
        self.write("WARNING", message)

    def error(self, message: str) -> None:
        self.write("ERROR", message)

    @contextlib.contextmanager
    def capture(self) -> Iterator[TrialLog]:
        """Route Python warnings and ``resweep`` log records of this process into the file."""
        if not self.active:
            yield self
            return
        handler = _Handler(self)
        loggers = [logging.getLogger("resweep"), logging.getLogger("py.warnings")]
        previous_levels = [lg.level for lg in loggers]
        for lg in loggers:
            lg.addHandler(handler)
            if lg.level == logging.NOTSET or lg.level > logging.INFO:
                lg.setLevel(logging.INFO)
        logging.captureWarnings(True)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("default")
                yield self
        finally:
            logging.captureWarnings(False)
            for lg, level in zip(loggers, previous_levels, strict=True):
                lg.removeHandler(handler)
                lg.setLevel(level)

    @contextlib.contextmanager
    def recording_errors(self, error_path: ErrorTarget = None) -> Iterator[None]:
        """Write the traceback of an exception leaving the block to the log, then re-raise."""
        try:
            yield
        except Exception as exc:
            self.record_exception(exc, error_path)
            raise

    def record_exception(self, exc: BaseException, error_path: ErrorTarget) -> dict[str, Any]:
        """Write the full traceback to the log and the one-line summary to ``error_path`` (a
        file, or a callable that takes the summary)."""
        summary = summarize_exception(exc)
        self.error("".join(traceback.format_exception(exc)).rstrip())
        if callable(error_path):
            error_path(summary)
        elif error_path is not None:
            write_text_atomic(error_path, json.dumps(summary, indent=2))
        return summary


class _Handler(logging.Handler):
    def __init__(self, log: TrialLog):
        super().__init__(logging.INFO)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            if record.name == "py.warnings":
                # "file:line: Category: text" -> keep it on one line
                message = " ".join(message.split())
            self.log.write(record.levelname if record.levelname in LEVELS else "INFO", message)
        except Exception:  # a log line must never break a trial
            self.handleError(record)


def summarize_exception(exc: BaseException) -> dict[str, Any]:
    """Type, first line of the message, and the config field / file when the error names them."""
    root = _innermost(exc)
    message = getattr(root, "message", None) or str(root)
    first = next((line for line in str(message).splitlines() if line.strip()), "")
    summary: dict[str, Any] = {"type": type(root).__name__, "message": first[:500]}
    field = getattr(root, "field", None)
    if field:
        summary["field"] = str(field)
    for attr in ("filename", "source", "path"):
        value = getattr(root, attr, None)
        if value and isinstance(value, str | Path) and str(value) not in first:
            summary["file"] = str(value)
            break
    return summary


def _innermost(exc: BaseException) -> BaseException:
    """The user's error inside Ray's wrappers: a task error's ``cause``, Ray Train's
    ``worker_failures`` (lowest rank first) or ``controller_failure``."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        failures = getattr(exc, "worker_failures", None)
        if isinstance(failures, dict) and failures:
            exc = failures[min(failures)]
            continue
        for attr in ("controller_failure", "cause"):
            inner = getattr(exc, attr, None)
            if isinstance(inner, BaseException):
                exc = inner
                break
        else:
            break
    return exc


def error_line(summary: dict[str, Any]) -> str:
    """``ConfigError: message (field 'x', file y)``."""
    where = []
    if summary.get("field"):
        where.append(f"field '{summary['field']}'")
    if summary.get("file"):
        where.append(f"file {summary['file']}")
    text = f"{summary.get('type', 'Error')}: {summary.get('message', '')}"
    return text + (f" ({', '.join(where)})" if where else "")
