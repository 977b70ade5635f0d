"""``tracking:``: a real local study sent to a real MLflow server (read back with MLflow's
client) and to TensorBoard event files (read back with TensorBoard's reader), compared with
the study's own files; a tracker that cannot be reached leaves the study running."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from resweep.errors import ConfigError
from resweep.study.layout import StudyLayout, read_parquet
from resweep.study.spec import study_from_dict, study_to_yaml

from conftest import tiny_config_dict

OBJECTIVE = "eval.demo-eval.psnr_y"


def _needs(module: str) -> None:
    pytest.importorskip(module, reason=f"{module} is not installed (pip install 'resweep[tracking]')")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on 127.0.0.1 with a sqlite backend and a local artifact root."""
    _needs("mlflow")
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    with open(root / "server.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
             "--artifacts-destination", str(root / "artifacts")],
            stdout=log, stderr=subprocess.STDOUT, cwd=root,
        )
        try:
            _wait_until_up(uri, proc, root / "server.log")
            yield uri
        finally:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_until_up(uri: str, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 240  # its first start creates the database (slow on a busy machine)
    while True:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"mlflow server did not start:\n{log.read_text()[-3000:]}")
        time.sleep(1)


def _tracked_study(**tracking):
    return study_from_dict({
        "name": "tracked",
        "base": tiny_config_dict(**{"train.iterations": 8, "eval.every": 4, "train.log_every": 2,
                                    "schedule.kind": "constant"}),
        "variants": [
            {"label": "ok", "overrides": {}},
            {"label": "explode", "overrides": {"optim.name": "sgd", "optim.lr": 1.0e12}},
        ],
        "seeds": [0, 1],
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
        "tracking": tracking,
    })


# --------------------------------------------------------------------------- without Ray
def test_tracking_section_round_trips_and_is_checked():
    study = _tracked_study(mlflow={"uri": "http://127.0.0.1:5000", "experiment": "x"}, tensorboard=True)
    import yaml

    again = study_from_dict(yaml.safe_load(study_to_yaml(study)))
    assert again.tracking == study.tracking
    assert again.tracking.mlflow.uri == "http://127.0.0.1:5000" and again.tracking.tensorboard
    assert _tracked_study().tracking.mlflow is None  # off unless asked for
    with pytest.raises(ConfigError, match="tracking.mlflow.uri"):
        _tracked_study(mlflow={"experiment": "x"})


def test_missing_mlflow_is_refused_with_the_extra_to_install(monkeypatch):
    import importlib.util

    from resweep.study.preflight import check_tracking

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"resweep\[tracking\]") as info:
        check_tracking(_tracked_study(mlflow={"uri": "http://127.0.0.1:5000"}))
    assert info.value.field == "tracking.mlflow"
    check_tracking(_tracked_study(tensorboard=True))  # tensorboardX comes with Ray Tune


def test_unreachable_mlflow_warns_once_and_never_raises(tmp_path, caplog):
    _needs("mlflow")
    from resweep.study.tracking import TrackerThread
    from resweep.study.tracking_mlflow import MlflowTracker

    spec = _tracked_study().trial_specs()[0]
    tracker = MlflowTracker(uri=f"http://127.0.0.1:{_free_port()}", experiment="x",
                            study_dir=str(tmp_path), seeds=2)
    thread = TrackerThread(tracker)
    with caplog.at_level(logging.WARNING, logger="resweep.study"):
        thread.put("start", "t1", spec.to_payload())
        for step in range(50):
            thread.put("result", "t1", step, time.time(), {"loss.total": 1.0 / (step + 1)})
        thread.put("end", "t1")
        thread.close(timeout=120)
    assert thread.broken and not thread.thread.is_alive()
    warnings = [r.getMessage() for r in caplog.records if "MLflow at" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "the study goes on without it" in warnings[0]


# --------------------------------------------------------------------------- a real study
@pytest.mark.ray
def test_study_in_mlflow_and_tensorboard_matches_its_own_files(ray_local, mlflow_server, tmp_path):
    _needs("tensorboard")
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from resweep.study import run_study

    study = _tracked_study(mlflow={"uri": mlflow_server}, tensorboard=True)
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    layout = StudyLayout(study_dir)
    trials = read_parquet(layout.trials).to_pandas().set_index("trial_id")
    curves = read_parquet(layout.curves).to_pandas()
    assert sorted(trials["status"]) == ["diverged", "diverged", "finished", "finished"]

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("tracked")
    runs = client.search_runs([experiment.experiment_id], max_results=100)
    parents = {r.data.tags["resweep.group"]: r for r in runs if r.data.tags.get("resweep.kind") == "group"}
    children = [r for r in runs if r.data.tags.get("resweep.kind") == "trial"]
    assert len(parents) == 2 and len(children) == 4 and len(runs) == 6
    by_trial = {r.data.tags["resweep.trial_id"]: r for r in children}
    assert set(by_trial) == set(trials.index)
    for trial_id, run in by_trial.items():
        row = trials.loc[trial_id]
        parent = parents[row["group"]]
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert run.data.params["seed"] == str(row["seed"]) and run.data.params["label"] == row["label"]
        assert run.data.tags["resweep.status"] == row["status"]
        assert run.info.status == ("FINISHED" if row["status"] == "finished" else "FAILED")
        assert Path(run.data.tags["resweep.log"]) == layout.trial_log(trial_id)
        assert run.data.params["config.optim.lr"] == str(row["config.optim.lr"])
        # every report, at its training iteration, as in curves.parquet
        own = curves[(curves.trial_id == trial_id) & np.isfinite(curves["loss.total"])]
        history = sorted(client.get_metric_history(run.info.run_id, "loss.total"), key=lambda m: m.step)
        assert [m.step for m in history] == own["iteration"].astype(int).tolist()
        assert [m.value for m in history] == pytest.approx(own["loss.total"].tolist())
        if row["status"] == "finished":
            assert run.data.metrics[f"final.{OBJECTIVE}"] == pytest.approx(row[f"final.{OBJECTIVE}"])
            assert run.data.metrics[f"best.{OBJECTIVE}"] == pytest.approx(row[f"best.{OBJECTIVE}"])

    ok = trials[trials.label == "ok"]
    ok_parent = parents[ok["group"].iloc[0]]
    assert ok_parent.info.status == "FINISHED" and ok_parent.data.tags["resweep.status"] == "complete"
    assert ok_parent.data.metrics[f"final.{OBJECTIVE}"] == pytest.approx(ok[f"final.{OBJECTIVE}"].mean())
    explode_parent = parents[trials.loc[trials.label == "explode", "group"].iloc[0]]
    assert explode_parent.info.status == "FAILED" and explode_parent.data.tags["resweep.status"] == "fail"

    # TensorBoard: one folder per trial, scalars at the training iteration
    assert {p.name for p in layout.tensorboard.iterdir()} == set(trials.index)
    for trial_id in ok.index:
        events = EventAccumulator(str(layout.tensorboard / trial_id))
        events.Reload()
        own = curves[curves.trial_id == trial_id].dropna(subset=[OBJECTIVE])
        scalars = events.Scalars(OBJECTIVE.replace(".", "/"))
        assert [s.step for s in scalars] == own["iteration"].astype(int).tolist()
        assert [s.value for s in scalars] == pytest.approx(own[OBJECTIVE].tolist(), rel=1e-6)
        assert "loss/total" in events.Tags()["scalars"]


def test_a_resumed_driver_continues_the_same_runs(mlflow_server, tmp_path):
    """A second driver on the same study folder (a resume) finds its runs by their tags."""
    from mlflow.tracking import MlflowClient

    from resweep.study.tracking import TrackerThread
    from resweep.study.tracking_mlflow import MlflowTracker

    spec = _tracked_study().trial_specs()[0]
    for driver in range(2):
        tracker = MlflowTracker(uri=mlflow_server, experiment="resumed", study_dir=str(tmp_path), seeds=2)
        thread = TrackerThread(tracker)
        thread.put("start", "t1", spec.to_payload())
        thread.put("result", "t1", 2 + 2 * driver, time.time(), {"loss.total": 1.0 + driver})
        thread.close(timeout=120)
        assert not thread.broken
    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name("resumed").experiment_id])
    assert sorted(r.data.tags["resweep.kind"] for r in runs) == ["group", "trial"]
    trial_run = next(r for r in runs if r.data.tags["resweep.kind"] == "trial")
    history = client.get_metric_history(trial_run.info.run_id, "loss.total")
    assert sorted((m.step, m.value) for m in history) == [(2, 1.0), (4, 2.0)]
