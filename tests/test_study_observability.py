"""What a user sees of a study: trial logs, one-line errors, progress, `resweep status` without
torch, and nothing listening off loopback."""

from __future__ import annotations

import io
import ipaddress
import os
import subprocess
import sys
import time

import pytest
import yaml

from resweep.study.layout import StudyLayout, read_parquet
from resweep.study.progress import Progress
from resweep.study.results import StudyResults
from resweep.study.spec import study_from_dict

from conftest import ROOT, tiny_config_dict

OBJECTIVE = "eval.demo-eval.psnr_y"

BLOCK_IMPORTS = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "ray"):
            raise ImportError(f"importing {name} is blocked in this test")
        return None
sys.meta_path.insert(0, Block())
from resweep.cli import main
code = main(sys.argv[1:])
assert "torch" not in sys.modules and "ray" not in sys.modules
sys.exit(code)
"""


def _fake_study(root):
    results = StudyResults(root, meta={
        "name": "copied", "knobs": ["optim.lr"], "total_trials": 2,
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
    })
    results.write_meta()
    experiment = {"optim": {"lr": 0.001}, "train": {"iterations": 8}}
    for tid, lr, psnr in (("t1", 1e-3, 30.5), ("t2", 1e-4, 31.25)):
        results.trial_started(tid, "", 0, {"optim.lr": lr}, experiment)
        for it in (4, 8):
            results.trial_result(tid, {"iteration": it, OBJECTIVE: psnr - 8 + it, "status": "running"})
        results.trial_completed(tid, {"status": "finished"}, total_iterations=8)
    results.flush(force=True)
    log = StudyLayout(root).trial_log("t2")
    log.parent.mkdir(parents=True)
    log.write_text("2026-01-01 00:00:00 INFO    training edsr_tiny\n")
    return results


def test_status_and_logs_work_where_torch_and_ray_cannot_be_imported(tmp_path):
    _fake_study(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", BLOCK_IMPORTS, "status", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "2/2 done (2 finished" in run.stdout and "best eval.demo-eval.psnr_y 31.25 (t2)" in run.stdout
    logs = subprocess.run([sys.executable, "-c", BLOCK_IMPORTS, "logs", str(tmp_path), "t2"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert logs.returncode == 0, logs.stderr
    assert "training edsr_tiny" in logs.stdout
    missing = subprocess.run([sys.executable, "-c", BLOCK_IMPORTS, "status", str(tmp_path), "--trial", "t9"],
                             capture_output=True, text=True, env=env, timeout=120)
    assert missing.returncode == 2 and "no log for trial 't9'" in missing.stderr and "t2" in missing.stderr


def test_parquet_parts_are_per_trial_and_read_as_one_dataset(tmp_path):
    results = _fake_study(tmp_path)
    layout = StudyLayout(tmp_path)
    parts = sorted(p.name for p in layout.curves.iterdir())
    assert parts == ["t1.parquet", "t2.parquet"]
    before = layout.part("curves.parquet", "t1").stat().st_mtime_ns
    time.sleep(0.01)
    # a report of t2 rewrites t2's part only
    results.trial_result("t2", {"iteration": 12, OBJECTIVE: 33.0, "spn.weight": 0.5})
    results.flush(force=True)
    assert layout.part("curves.parquet", "t1").stat().st_mtime_ns == before
    curves = read_parquet(layout.curves).to_pandas()
    assert len(curves) == 5 and curves["spn.weight"].notna().sum() == 1  # schemas unified
    # the analysis loader reads the parts
    from resweep.analysis.load import load_study

    data = load_study(tmp_path)
    assert len(data.curves) == 5 and set(data.trials["trial_id"]) == {"t1", "t2"}
    # a trial resumed from an earlier checkpoint repeats reports: the old copies go
    results.trial_result("t1", {"iteration": 4, OBJECTIVE: 20.0})
    results.flush(force=True)
    t1 = read_parquet(layout.curves).to_pandas().query("trial_id == 't1'")
    assert list(t1["iteration"]) == [4] and t1[OBJECTIVE].iloc[0] == 20.0


def test_plain_progress_shows_each_running_trial_and_the_study():
    out = io.StringIO()
    progress = Progress("demo", total_runs=4, objective=OBJECTIVE, stream=out, plain_interval_s=0)
    assert not progress.live_mode  # not a terminal: plain lines
    progress.run_started("t1", "t1 lr=0.001 s0", 100)
    progress.run_started("t2", "t2 lr=0.0001 s0", 100)
    progress.run_report("t1", {"iteration": 25, "time_per_step": 0.2, OBJECTIVE: 30.0})
    progress.run_report("t2", {"iteration": 50, "time_per_step": 0.1})
    progress.set_summary({"finished": 0, "running": 2}, (30.0, "t1"))
    progress.tick(force=True)
    text = out.getvalue().splitlines()
    last_block = text[-3:]
    assert "demo: 0/4 done | 2 running" in last_block[0] and "best eval.demo-eval.psnr_y 30 (t1)" in last_block[0]
    assert "t1 lr=0.001 s0: it 25/100 | 200 ms/step | ETA 15s" in last_block[1]
    assert "t2 lr=0.0001 s0: it 50/100 | 100 ms/step | ETA 5s" in last_block[2]
    # study ETA: (15 + 5 s left of the running trials + 2 pending x 100 steps x 0.15 s) / 2 running = 25 s
    assert "ETA 25s" in last_block[0]


@pytest.mark.ray
def test_worker_error_is_one_line_with_the_log_path_and_logs_hold_the_engine_lines(ray_local, tmp_path, capfd):
    import torch

    from resweep.study import run_study

    # a safe torch file of another network: preflight passes it, the trial raises loading it
    other = tmp_path / "other_network.pt"
    torch.save({"body.0.weight": torch.zeros(3, 3)}, other)
    study = study_from_dict(
        {
            "name": "errors-one-line",
            "base": tiny_config_dict(**{"train.iterations": 6, "train.log_every": 2, "eval.every": 3}),
            "variants": [
                {"label": "ok", "overrides": {}},
                {"label": "broken", "overrides": {"model.init_from": str(other)}},
            ],
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
            "failure": {"max_failures": 0},
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=False)
    out, err = capfd.readouterr()
    text = out + err
    layout = StudyLayout(study_dir)
    trials = read_parquet(layout.trials).to_pandas().set_index("label")
    broken = trials.loc["broken", "trial_id"]
    log_path = layout.trial_log(broken)
    lines = [line for line in text.splitlines() if "errored:" in line and broken in line]
    assert len(lines) == 1, text[-3000:]
    assert "Error: " in lines[0] and str(other) in lines[0] and f"full log: {log_path}" in lines[0]
    assert "Traceback" not in text and "PlacementGroupCleaner" not in text
    assert "Traceback" in log_path.read_text()  # the full story is in the trial's log
    ok_log = layout.trial_log(trials.loc["ok", "trial_id"]).read_text()
    assert "training edsr_tiny" in ok_log and "it 6/6 |" in ok_log
    # progress lines while it ran (not a terminal: plain lines)
    assert "ms/step" in out and "ETA" in out and "errors-one-line:" in out


def _is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip.split("%")[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return address.is_loopback


@pytest.mark.ray
def test_a_running_local_study_listens_on_loopback_only(tmp_path):
    import psutil

    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "sockets",
        "base": tiny_config_dict(**{"train.iterations": 40, "train.log_every": 4, "eval.every": 20}),
        "space": {"optim.lr": {"type": "grid", "values": [1e-3, 1e-4]}},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
    }))
    study_dir = tmp_path / "study"
    # as from a fresh shell: a Ray started earlier in this process exported its address and
    # auth mode, which would change how the study's own Ray starts (and what it logs)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    driver = subprocess.Popen(
        [sys.executable, "-m", "resweep.cli", "run", str(study_file), "--dir", str(study_dir)],
        cwd=ROOT, env={**env, "PYTHONUNBUFFERED": "1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    listening: dict[str, str] = {}
    try:
        deadline = time.monotonic() + 300
        while not any((study_dir / "trials").glob("*/log.txt")):
            assert driver.poll() is None, driver.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "no trial started"
            time.sleep(0.5)
        time.sleep(2)
        root = psutil.Process(driver.pid)
        processes = {p.pid: p for p in [root, *root.children(recursive=True)]}
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.pid in processes:
                with_name = f"{conn.laddr.ip}:{conn.laddr.port}"
                listening[with_name] = processes[conn.pid].name()
    finally:
        # what listens is known once a trial runs: stop the driver and its local Ray there
        # (the study itself is not what this test is about)
        from kill_resume import _kill_group

        _kill_group(driver.pid)
        output = driver.communicate(timeout=120)[0].decode()
    names = set(listening.values())
    assert {"gcs_server", "raylet"} <= names, listening  # the check saw Ray's servers
    public = {a: n for a, n in listening.items() if not _is_loopback(a.rsplit(":", 1)[0])}
    assert not public, f"listening off loopback: {public}"
    assert "Token authentication is enabled" in output  # Ray's token auth stays on


@pytest.mark.slow
@pytest.mark.ray
def test_resweep_train_shows_progress_and_writes_its_log(ray_local, tmp_path, capsys):
    from resweep.config import ExperimentConfig
    from resweep.trainables.train import run_training

    config = ExperimentConfig.from_dict(
        tiny_config_dict(**{"train.iterations": 8, "train.log_every": 2, "eval.every": 4})
    )
    summary = run_training(config, output_dir=tmp_path / "run", workers=1)
    out = capsys.readouterr().out
    assert summary.status == "finished"
    assert "tiny: it 8/8 |" in out and "ms/step" in out and "ETA" in out
    log = (tmp_path / "run" / "log.txt").read_text()
    assert summary.log_path == tmp_path / "run" / "log.txt"
    assert "training edsr_tiny" in log and "it 2/8 |" in log and "it 8/8 |" in log


def test_trial_warnings_reach_the_driver_and_errors_are_summarised_through_ray_wrappers(tmp_path):
    import logging
    import warnings

    from ray.train import WorkerGroupError

    from resweep.errors import ConfigError
    from resweep.study.callback import StudyCallback
    from resweep.study.trial_spec import TrialSpec
    from resweep.trainables.relay import RelayActor
    from resweep.trainables.trial_log import TrialLog, error_line, summarize_exception

    layout = StudyLayout(tmp_path)
    relay = RelayActor()  # the actor's body, called in this process (no Ray)
    log = TrialLog(sink=lambda text: relay.push("t1", text=text))
    with log.capture():
        log.info("training edsr_tiny")
        warnings.warn("VGG weights are random: perceptual loss means little", UserWarning, stacklevel=1)
        logging.getLogger("resweep.methods.spn").warning("lambda is large")
    relay.push("t1", files={"t1/demo/a.png": b"png", "_gt/demo/a.png": b"gt", "../escape.png": b"no"})
    callback = StudyCallback(study_dir=tmp_path, name="s", objective=OBJECTIVE, mode="max",
                             total_trials=1, quiet=False)
    out = io.StringIO()
    callback.layout = layout
    callback.progress = Progress("s", stream=out)
    callback.specs = {"t1": TrialSpec(label="spn", seed=1, params={}, experiment={})}
    callback._take(relay.drain())
    relayed = out.getvalue().splitlines()
    assert len(relayed) == 2 and all(line.startswith("t1 (spn s1): warning: ") for line in relayed)
    assert "VGG weights are random" in relayed[0] and "lambda is large" in relayed[1]
    callback._take(relay.drain())
    assert out.getvalue().splitlines() == relayed  # each line once
    # the driver wrote the trial's log and images into its own study folder, nothing outside it
    assert "training edsr_tiny" in layout.trial_log("t1").read_text()
    assert (layout.images / "t1" / "demo" / "a.png").read_bytes() == b"png"
    assert (layout.images / "_gt" / "demo" / "a.png").read_bytes() == b"gt"
    assert not (tmp_path / "escape.png").exists() and not (layout.root.parent / "escape.png").exists()

    inner = ConfigError("no such file", source="/w/teacher.pt", field="methods.eco.teacher")
    wrapped = WorkerGroupError("Training failed due to worker errors", {1: RuntimeError("other"), 0: inner})
    summary = summarize_exception(wrapped)
    assert summary == {"type": "ConfigError", "message": "no such file",
                       "field": "methods.eco.teacher", "file": "/w/teacher.pt"}
    assert error_line(summary) == "ConfigError: no such file (field 'methods.eco.teacher', file /w/teacher.pt)"


@pytest.mark.slow
@pytest.mark.ray
def test_resweep_train_worker_error_is_one_line_and_the_log_holds_the_traceback(ray_local, tmp_path, capsys):
    from resweep.config import ExperimentConfig
    from resweep.trainables.train import run_training

    # valid as a config, refused by the engine inside each worker (a batch of 5 over 2 workers)
    config = ExperimentConfig.from_dict(tiny_config_dict(**{"data.batch_size": 5, "train.iterations": 4}))
    summary = run_training(config, output_dir=tmp_path / "run", workers=2, max_failures=0)
    assert summary.status == "errored"
    assert summary.error == "ConfigError: batch size 5 does not divide by 2 workers (field 'data.batch_size')"
    assert "Traceback" in (tmp_path / "run" / "log.txt").read_text()
