"""Killing a study's driver mid-run and resuming it, as a user would: ``resweep run`` in its own
process (and process group), SIGKILL once the study reached a given point, ``resweep resume``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow.parquet as pq

from conftest import ROOT

CLI = [sys.executable, "-m", "resweep.cli"]
ENDED = ("finished", "diverged", "pruned", "errored")


def trial_rows(study_dir: Path) -> list[dict]:
    """The rows of ``trials.parquet`` so far ([] before the first, or while it is rewritten)."""
    path = Path(study_dir) / "trials.parquet"
    try:
        return pq.read_table(path).to_pylist() if path.is_file() else []
    except Exception:  # caught mid-write: read again at the next poll
        return []


def ended_rows(study_dir: Path) -> list[dict]:
    return [r for r in trial_rows(study_dir) if r["status"] in ENDED]


def driver_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONUNBUFFERED": "1", **extra}


def kill_driver_when(
    study_file: Path,
    study_dir: Path,
    reached: Callable[[list[dict]], bool],
    *,
    extra_args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    timeout_s: float = 400,
) -> dict[str, dict]:
    """Run the study, SIGKILL its driver as soon as ``reached(rows of trials.parquet)``; returns
    those rows by trial id (what was on disk before the kill)."""
    driver = subprocess.Popen(
        [*CLI, "run", str(study_file), "--dir", str(study_dir), *extra_args],
        cwd=ROOT, env=env or driver_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not reached(rows := trial_rows(study_dir)):
            assert driver.poll() is None, driver.stdout.read().decode()[-4000:]
            assert time.monotonic() < deadline, "study made no progress"
            time.sleep(0.5)
    finally:
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        # the driver's local Ray dies with it; make sure of it within that process group only
        # (the test session's own Ray lives in another group)
        time.sleep(3)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(driver.pid, signal.SIGKILL)
    return {r["trial_id"]: r for r in rows}


def resume(
    study_dir: Path, *, extra_args: Sequence[str] = (), env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``resweep resume`` to the end; asserts it succeeded (showing its output if not)."""
    resumed = subprocess.run(
        [*CLI, "resume", str(study_dir), *extra_args],
        cwd=ROOT, env=env or driver_env(), capture_output=True, text=True, timeout=600,
    )
    assert resumed.returncode == 0, resumed.stdout[-4000:] + resumed.stderr[-4000:]
    return resumed
