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

from resweep.study.results import read_trials

from conftest import ROOT

CLI = [sys.executable, "-m", "resweep.cli"]
ENDED = ("finished", "diverged", "pruned", "errored")


def trial_rows(study_dir: Path) -> list[dict]:
    """The rows of ``trials.parquet`` (a folder of parts) so far ([] before the first)."""
    return read_trials(study_dir)


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
        with contextlib.suppress(ProcessLookupError):  # a driver that died shows its output above
            os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        _kill_group(driver.pid)
    return {r["trial_id"]: r for r in rows}


def _kill_group(pgid: int, wait_s: float = 5.0) -> None:
    """SIGKILL what is left of the driver's process group (its local Ray: the machine went
    down with it) and wait until it is gone. Only that group: the test session's own Ray
    lives in another one."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)  # signal 0: does any process of the group remain?
        except ProcessLookupError:
            return
        time.sleep(0.1)


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
