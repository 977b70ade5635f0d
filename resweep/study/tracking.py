"""The study's trials in the trackers people already use: MLflow and TensorBoard
(``tracking:`` in the study file). The study's own files stay the record; trackers are copies.

A Ray Tune callback on the driver (the driver sees every report), placed after
:class:`~resweep.study.callback.StudyCallback`, which writes an ended trial's row first: MLflow
reads the status and final values from that row, so both say the same thing.

Ray Tune's own logger callbacks were not enough:

- ``MLflowLoggerCallback`` makes one flat run per trial, named by Ray: no parent run per seed
  group; its params are the whole flattened Tune config (here the trial spec payload); it sends
  one request per report from the driver's loop, and the study fails when the server cannot be
  reached at the start;
- ``TBXLoggerCallback`` writes into Ray's trial folder (``tune/<long Ray name>/``), with Tune's
  count of reports as the step and ``ray/tune/`` before every name. We keep its writer
  (tensorboardX, a dependency of Ray Tune) and choose the folder, the step (the training
  iteration) and the names.

Never in the way of the study: each tracker runs in its own thread fed by a queue, so the
driver only enqueues; MLflow calls are batched (every report since the last send in one
request per run, every :data:`FLUSH_S`). A tracker that raises (server unreachable, refused
request) is reported once and stops for the rest of this driver; a resume tries again and
continues the same runs (found by their tags).
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from ray.tune import Callback

from resweep.engine.records import split_report
from resweep.study.layout import StudyLayout, safe_name
from resweep.study.spec import StudyConfig
from resweep.study.trial_spec import TRIAL_KEY

logger = logging.getLogger("resweep.study")

FLUSH_S = 2.0  # a tracker sends what it gathered at most this long ago
END_WAIT_S = 30.0  # at the end of the study, how long the trackers may take to send the rest
QUEUE_MAX = 100_000  # events held for a slow tracker; beyond, new ones are dropped (and counted)
# what Ray Tune adds to each report: bookkeeping, not a metric of the training
TUNE_KEYS = frozenset({
    "timestamp", "pid", "training_iteration", "time_this_iter_s", "time_since_restore",
    "iterations_since_restore", "done", "iteration",
})


class Tracker(Protocol):
    """What a tracker does with a trial's events (called in its own thread, in order)."""

    def describe(self) -> str: ...
    def start(self, trial_id: str, payload: dict[str, Any]) -> None: ...
    def result(self, trial_id: str, step: int, wall_s: float, metrics: dict[str, float]) -> None: ...
    def end(self, trial_id: str) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def report_scalars(result: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """(training iteration, finite numeric metrics) of one report: what trackers plot."""
    scalars, _ = split_report(result)
    step = scalars.get("iteration")
    if not isinstance(step, int | float):
        step = scalars.get("training_iteration") or 0
    metrics = {
        key: float(value) for key, value in scalars.items()
        if key not in TUNE_KEYS and isinstance(value, int | float) and not isinstance(value, bool)
        and math.isfinite(value)
    }
    return int(step), metrics


# --------------------------------------------------------------------------- tensorboard
class TensorBoardTracker:
    """Event files per trial in ``<study>/tensorboard/<trial_id>/``; a metric ``eval.set.psnr``
    is the tag ``eval/set/psnr`` (TensorBoard groups tags by what comes before the first '/')."""

    def __init__(self, root: str):
        self.root = Path(root)
        self.writers: dict[str, Any] = {}

    def describe(self) -> str:
        return f"TensorBoard in {self.root}"

    def start(self, trial_id: str, payload: dict[str, Any]) -> None:
        from tensorboardX import SummaryWriter

        if trial_id not in self.writers:  # a retried or resumed trial writes a new event file
            self.writers[trial_id] = SummaryWriter(logdir=str(self.root / safe_name(trial_id)),
                                                   flush_secs=int(FLUSH_S) or 1)

    def result(self, trial_id: str, step: int, wall_s: float, metrics: dict[str, float]) -> None:
        writer = self.writers.get(trial_id)
        if writer is None:
            return
        for key, value in metrics.items():
            writer.add_scalar(key.replace(".", "/"), value, global_step=step, walltime=wall_s)

    def end(self, trial_id: str) -> None:
        writer = self.writers.pop(trial_id, None)
        if writer is not None:
            writer.close()

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for trial_id in list(self.writers):
            self.end(trial_id)


# --------------------------------------------------------------------------- the thread
_STOP = object()


class TrackerThread:
    """Runs one tracker's calls in order in a daemon thread; the driver only enqueues."""

    def __init__(self, tracker: Tracker):
        self.tracker = tracker
        self.broken = False
        self.dropped = 0
        self.queue: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        self.thread = threading.Thread(target=self._run, name=f"resweep-{type(tracker).__name__}", daemon=True)
        self.thread.start()

    def put(self, *event: Any) -> None:
        if self.broken:
            return
        try:
            self.queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1

    def close(self, timeout: float) -> None:
        """Send the rest, waiting at most ``timeout`` seconds."""
        with contextlib.suppress(queue.Full):
            self.queue.put((_STOP,), timeout=max(timeout, 0.01))
        self.thread.join(timeout)
        if self.thread.is_alive():
            logger.warning("%s: not done after %.0f s at the end of the study; what it had not sent "
                           "is left out", self.tracker.describe(), timeout)
        elif self.dropped:
            logger.warning("%s: %d event(s) left out (it fell %d events behind)",
                           self.tracker.describe(), self.dropped, QUEUE_MAX)

    def _run(self) -> None:
        last_flush = time.monotonic()
        while True:
            try:
                event = self.queue.get(timeout=FLUSH_S)
            except queue.Empty:
                event = None
            if event is not None and event[0] is _STOP:
                self._call("close")
                return
            if event is not None:
                self._call(*event)
            if time.monotonic() - last_flush >= FLUSH_S:
                self._call("flush")
                last_flush = time.monotonic()

    def _call(self, name: str, *args: Any) -> None:
        if self.broken:
            return
        try:
            getattr(self.tracker, name)(*args)
        except Exception as exc:  # any failure of a tracker must leave the study running
            self.broken = True
            text = " ".join(str(exc).split())[:300]
            logger.warning("%s failed (%s: %s); the study goes on without it (a resume tries again)",
                           self.tracker.describe(), type(exc).__name__, text)


# --------------------------------------------------------------------------- the callback
class TrackingCallback(Callback):
    """Picklable (Tune keeps it for resume): the trackers and their threads start in :meth:`setup`."""

    def __init__(self, *, study_dir: Path, name: str, seeds: int, mlflow_uri: str | None = None,
                 mlflow_experiment: str | None = None, tensorboard: bool = False):
        self.study_dir = str(study_dir)
        self.name = name
        self.seeds = seeds
        self.mlflow_uri = mlflow_uri
        self.mlflow_experiment = mlflow_experiment
        self.tensorboard = tensorboard

    def __getstate__(self) -> dict[str, Any]:
        keep = ("study_dir", "name", "seeds", "mlflow_uri", "mlflow_experiment", "tensorboard")
        return {k: v for k, v in self.__dict__.items() if k in keep}

    def setup(self, **info: Any) -> None:
        trackers: list[Tracker] = []
        if self.mlflow_uri:
            from resweep.study.tracking_mlflow import MlflowTracker

            trackers.append(MlflowTracker(uri=self.mlflow_uri, experiment=self.mlflow_experiment or self.name,
                                          study_dir=self.study_dir, seeds=self.seeds))
        if self.tensorboard:
            trackers.append(TensorBoardTracker(str(StudyLayout(Path(self.study_dir)).tensorboard)))
        self.threads = [TrackerThread(t) for t in trackers]

    def _put(self, *event: Any) -> None:
        for thread in getattr(self, "threads", ()):
            thread.put(*event)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put("start", trial.trial_id, trial.config[TRIAL_KEY])

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        step, metrics = report_scalars(result)
        self._put("result", trial.trial_id, step, float(result.get("timestamp") or time.time()), metrics)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put("end", trial.trial_id)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._put("end", trial.trial_id)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        deadline = time.monotonic() + END_WAIT_S
        for thread in getattr(self, "threads", ()):
            thread.close(deadline - time.monotonic())
        self.threads = []


# --------------------------------------------------------------------------- building
def tracking_callbacks(study: StudyConfig, layout: StudyLayout) -> list[Callback]:
    """The study's tracking callback, or none when its study file asks for no tracker."""
    tracking = study.tracking
    if tracking.mlflow is None and not tracking.tensorboard:
        return []
    return [TrackingCallback(
        study_dir=layout.root, name=study.name, seeds=len(study.seeds),
        mlflow_uri=tracking.mlflow.uri if tracking.mlflow else None,
        mlflow_experiment=tracking.mlflow.experiment if tracking.mlflow else None,
        tensorboard=tracking.tensorboard,
    )]
