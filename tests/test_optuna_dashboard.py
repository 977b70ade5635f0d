"""optuna-dashboard (the optional `dashboard` extra) opens a finished study's sqlite storage:
started for real on 127.0.0.1, its HTTP API lists the study and its trials with their values."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from resweep.study.spec import study_from_dict

from conftest import tiny_config_dict

pytestmark = pytest.mark.ray
pytest.importorskip("optuna_dashboard")

OBJECTIVE = "eval.demo-eval.psnr_y"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read().decode())


@pytest.mark.slow
def test_optuna_dashboard_reads_a_finished_study(ray_local, tmp_path: Path) -> None:
    from resweep.study import run_study

    study = study_from_dict(
        {
            "name": "dash-study",
            "base": tiny_config_dict(**{"train.iterations": 4, "eval.every": 4, "train.log_every": 4}),
            "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
            "search": {"algorithm": "optuna_tpe", "num_samples": 3, "seed": 1, "optuna_storage": "sqlite"},
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
            "budget": {"max_concurrent": 2},
        }
    )
    study_dir = run_study(study, study_dir=tmp_path / "study", quiet=True)
    db = study_dir / "optuna.db"
    assert db.is_file()
    # what Optuna itself stored: the reference the dashboard must show
    stored = optuna.load_study(study_name="dash-study", storage=f"sqlite:///{db}")
    expected = {t.number: (t.state.name, t.values, t.params["optim.lr"]) for t in stored.trials}
    assert len(expected) == 3 and any(state == "COMPLETE" for state, _, _ in expected.values())

    port = _free_port()
    exe = shutil.which("optuna-dashboard") or str(Path(sys.executable).with_name("optuna-dashboard"))
    server = subprocess.Popen(
        [exe, f"sqlite:///{db}", "--host", "127.0.0.1", "--port", str(port), "--server", "wsgiref", "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        summaries = None
        while summaries is None:
            assert server.poll() is None, server.stdout.read().decode()[-2000:]
            assert time.monotonic() < deadline, "optuna-dashboard did not answer"
            with contextlib.suppress(OSError):
                summaries = _get(f"{base}/api/studies")["study_summaries"]
            time.sleep(0.3)
        (summary,) = [s for s in summaries if s["study_name"] == "dash-study"]
        detail = _get(f"{base}/api/studies/{summary['study_id']}")
        shown = {
            t["number"]: (t["state"].upper(), t.get("values"), float(next(p["param_external_value"]
                          for p in t["params"] if p["name"] == "optim.lr")))
            for t in detail["trials"]
        }
        assert set(shown) == set(expected)
        for number, (state, values, lr) in expected.items():
            assert shown[number][0] == state
            assert shown[number][2] == pytest.approx(lr)
            if state == "COMPLETE":
                assert shown[number][1] == pytest.approx(values)
        # loopback only: nothing listens on the machine's other address (where it has one)
        other = socket.gethostbyname(socket.gethostname())
        if not other.startswith("127."):
            with pytest.raises(OSError), socket.create_connection((other, port), 1):
                pass
    finally:
        server.terminate()
        server.wait(timeout=10)
