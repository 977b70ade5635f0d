"""One driver per study (``driver.lock``), and a study whose driver died before Ray Tune saved
anything resumes by starting."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml

from resweep.study.driver_lock import STALE_AFTER_S, StudyLocked, driver_lock
from resweep.study.layout import DRIVER_LOCK
from resweep.study.results import read_trials

from conftest import ROOT, tiny_config_dict
from kill_resume import CLI, _kill_group, driver_env, resume

OBJECTIVE = "eval.demo-eval.psnr_y"


def test_a_second_driver_is_refused_while_the_first_holds_the_study(tmp_path):
    with driver_lock(tmp_path) as holder:
        assert json.loads((tmp_path / DRIVER_LOCK).read_text())["pid"] == os.getpid()
        with pytest.raises(StudyLocked, match=f"pid {os.getpid()}"), driver_lock(tmp_path):
            pass
    assert not (tmp_path / DRIVER_LOCK).exists(), "the lock is released when the driver ends"
    with driver_lock(tmp_path) as again:  # and can be taken again
        assert again["token"] != holder["token"]


def test_the_lock_is_released_when_the_driver_fails(tmp_path):
    with pytest.raises(RuntimeError), driver_lock(tmp_path):
        raise RuntimeError("trial setup failed")
    assert not (tmp_path / DRIVER_LOCK).exists()


def test_a_lock_whose_process_died_is_taken_over(tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    now = time.time()
    (tmp_path / DRIVER_LOCK).write_text(json.dumps(
        {"host": os.uname().nodename, "pid": gone.pid, "started": now, "heartbeat": now, "token": "old"}))
    with driver_lock(tmp_path) as me:
        assert json.loads((tmp_path / DRIVER_LOCK).read_text())["token"] == me["token"]


def test_a_lock_of_another_machine_counts_until_its_heartbeat_is_stale(tmp_path):
    lock = tmp_path / DRIVER_LOCK
    fresh = {"host": "worker-7", "pid": 1, "started": time.time(), "heartbeat": time.time(), "token": "x"}
    lock.write_text(json.dumps(fresh))
    with pytest.raises(StudyLocked, match="worker-7"), driver_lock(tmp_path):
        pass
    lock.write_text(json.dumps({**fresh, "heartbeat": time.time() - STALE_AFTER_S - 1}))
    with driver_lock(tmp_path) as me:
        assert json.loads(lock.read_text())["token"] == me["token"]


def _study_file(tmp_path, name: str, values: list[float]):
    study_file = tmp_path / f"{name}.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": name,
        "base": tiny_config_dict(**{"train.iterations": 16, "eval.every": 8, "train.log_every": 8}),
        "space": {"optim.lr": {"type": "grid", "values": values}},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
    }))
    return study_file


def test_run_and_resume_refuse_a_study_another_driver_holds(tmp_path):
    study_dir = tmp_path / "study"
    study_file = _study_file(tmp_path, "held", [1e-3])
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom resweep.study.driver_lock import driver_lock\n"
        f"with driver_lock({str(study_dir)!r}):\n    print('held', flush=True)\n    time.sleep(120)\n")],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for argv in (["run", str(study_file), "--dir", str(study_dir)], ["resume", str(study_dir)]):
            if argv[0] == "resume":
                (study_dir / "study.yaml").write_text(study_file.read_text())
            out = subprocess.run([*CLI, *argv], cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert out.returncode == 2, out.stdout + out.stderr
            assert f"pid {holder.pid}" in out.stderr and "one driver per study" in out.stderr
            assert "Traceback" not in out.stderr
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.slow
@pytest.mark.ray
def test_drivers_killed_at_random_moments_from_the_first_second_each_resume(tmp_path):
    """SIGKILL at random moments from when the study folder exists (before and after Tune's
    first experiment checkpoint), ``resweep resume`` each time: every grid point finishes
    exactly once, and a trial that had finished is never run again."""
    values = [1e-3, 5e-4, 2e-4, 1e-4]
    study_file = _study_file(tmp_path, "random-kills", values)
    study_dir = tmp_path / "study"
    rng = random.Random(20261202)
    argv = [*CLI, "run", str(study_file), "--dir", str(study_dir)]
    finished_seen: dict[str, float] = {}
    for kill in range(3):
        driver = subprocess.Popen(argv, cwd=ROOT, env=driver_env(), stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 120
        while not (study_dir / "study.yaml").is_file() and driver.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        time.sleep(rng.uniform(0.0, 4.0 * (kill + 1)))  # the first kill lands in the first seconds
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait()
        _kill_group(driver.pid)
        if (study_dir / "trials.parquet").exists():
            for row in read_trials(study_dir):
                if row["status"] == "finished":
                    finished_seen.setdefault(row["trial_id"], row["started_at"])
        argv = [*CLI, "resume", str(study_dir)]
    resume(study_dir)
    rows = read_trials(study_dir)
    finished = [r for r in rows if r["status"] == "finished"]
    assert sorted(r["param.optim.lr"] for r in finished) == sorted(values), rows
    assert all(r["status"] in ("finished", "errored") for r in rows)
    assert all("lost with the driver" in (r["error"] or "") for r in rows if r["status"] == "errored")
    by_id = {r["trial_id"]: r for r in rows}
    for trial_id, started in finished_seen.items():
        assert by_id[trial_id]["status"] == "finished" and by_id[trial_id]["started_at"] == started
