"""The driver's cost of ``tracking:`` (no training, no Ray run): Tune's events for a batch of
trials driven through the study's callbacks, side by side in one process against one local
``mlflow server`` (sqlite):

1. ``StudyCallback`` alone (what the driver does anyway);
2. + resweep's ``TrackingCallback`` (MLflow and TensorBoard, each in its own thread);
3. + Ray Tune's ``MLflowLoggerCallback`` (one request per param and per metric, on the driver).

    PYTHONPATH=. python benchmarks/bench_tracking.py [--trials 12] [--concurrency 4]

Printed: the driver's time in the callbacks (wall, and its own thread's CPU), ratios to (1), and for (2) how long the
end of the study waited for the trackers to send the rest. Needs mlflow (resweep[tracking]).
The machine may be shared: read the ratios, taken in one run.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout

from bench_driver import OBJECTIVE, _drive, _experiment, _trial  # noqa: E402


class _Trial(SimpleNamespace):
    __hash__ = object.__hash__  # Ray's logger callbacks key their runs by the trial object


def _server(root: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "art")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                return proc, uri
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def _study_callback(study: Path, total: int):
    from resweep.study.callback import StudyCallback

    study.mkdir(parents=True)
    meta = {"name": study.name, "knobs": ["optim.lr"], "seeds": [0, 1, 2], "variants": [],
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "iterations": 100, "total_trials": total}
    (study / "study.json").write_text(json.dumps(meta))
    return StudyCallback(study_dir=study, name=study.name, objective=OBJECTIVE, mode="max",
                         total_trials=total, quiet=True)


class _Both:
    """Tune's CallbackList in miniature: each event to each callback, in order."""

    def __init__(self, callbacks: list):
        self.callbacks = callbacks

    def __getattr__(self, name: str):
        return lambda **kw: [getattr(c, name)(**kw) for c in self.callbacks]


def run(variant: str, root: Path, uri: str, trials: int, concurrency: int) -> tuple[float, float, float]:
    from resweep.study.tracking import TrackingCallback

    study = root / variant
    callbacks = [_study_callback(study, trials)]
    if variant == "resweep":
        callbacks.append(TrackingCallback(study_dir=study, name="bench-resweep", seeds=3, mlflow_uri=uri,
                                          tensorboard=True))
    elif variant == "ray":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        callbacks.append(MLflowLoggerCallback(tracking_uri=uri, experiment_name="bench-ray"))
    both = _Both(callbacks)
    both.setup()
    experiment = _experiment()
    items = [_Trial(**vars(_trial(i, experiment))) for i in range(trials)]
    t0, c0 = time.perf_counter(), time.thread_time()
    _drive(both, items, concurrency)
    driven, cpu = time.perf_counter() - t0, time.thread_time() - c0
    t1 = time.perf_counter()
    both.on_experiment_end(trials=items)
    return driven, cpu, time.perf_counter() - t1


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, uri = _server(root)
        try:
            import mlflow  # noqa: F401  (imported before the clock starts, for every variant)

            rows = {v: run(v, root, uri, args.trials, args.concurrency) for v in ("none", "resweep", "ray")}
        finally:
            proc.terminate()
            proc.wait(30)
    base = rows["none"][0]
    print(f"{args.trials} trials x 10 reports, {args.concurrency} at a time; driver time in the callbacks "
          "(wall, and the CPU of the driver's thread: the rest of the wall is waiting, for the GIL or a server)")
    for name, label in (("none", "StudyCallback alone"), ("resweep", "+ resweep TrackingCallback"),
                        ("ray", "+ Ray MLflowLoggerCallback")):
        driven, cpu, end = rows[name]
        print(f"  {label:30s} wall {driven:8.2f} s  x{driven / base:6.2f}   driver CPU {cpu:6.2f} s  x{cpu / rows['none'][1]:5.2f}"
              f"   end of study {end:6.2f} s")


if __name__ == "__main__":
    main()
