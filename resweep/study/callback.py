"""The driver side of a running study: a Ray Tune callback that records every report in the
study's files, shows live progress, writes what trials send through the study's relay actor
(their log lines, error summaries and saved images: ``resweep.trainables.relay``) into the
study folder, relays their warnings, and turns a trial's error into one line plus the path of
its full log."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from resweep.status import Status
from resweep.study import resource_wait
from resweep.study.layout import StudyLayout
from resweep.study.progress import Progress
from resweep.study.results import StudyResults
from resweep.study.trial_spec import TrialSpec
from resweep.trainables.relay import drain, start_relay, stop_relay, write_relayed
from resweep.trainables.trial_log import error_line, parse_level

DRAIN_INTERVAL_S = 1.0


class StudyCallback(Callback):
    """Picklable (Tune keeps it in its experiment state for resume): the live parts (open
    files, the display) are made in :meth:`setup`, also after a restore."""

    def __init__(self, *, study_dir: Path, name: str, objective: str, mode: str,
                 total_trials: int | None, quiet: bool, storage: str = "",
                 artifact_keys: dict[str, str] | None = None):
        self.study_dir = str(study_dir)
        self.name = name
        self.objective = objective
        self.mode = mode
        self.total_trials = total_trials
        self.quiet = quiet
        self.storage = storage
        self.artifact_keys = dict(artifact_keys or {})  # stage definition digest -> key

    def __getstate__(self) -> dict[str, Any]:
        keep = ("study_dir", "name", "objective", "mode", "total_trials", "quiet", "storage", "artifact_keys")
        return {k: v for k, v in self.__dict__.items() if k in keep}

    # ------------------------------------------------------------------ Tune events
    def setup(self, **info: Any) -> None:
        # (re)load from disk, also after a restore: the files are the source of truth
        self.layout = StudyLayout(Path(self.study_dir))
        self.results = StudyResults(self.layout.root)
        self.results.meta = json.loads(self.layout.meta.read_text())
        self.specs: dict[str, TrialSpec] = {}  # running trials only
        # trials find it by the study folder's name (TrialSettings.relay); created here, so
        # also after a restore, before any trial starts
        self.relay = start_relay(self.study_dir)
        self.last_drain = 0.0
        self.progress = Progress(self.name, total_runs=self.total_trials, objective=self.objective,
                                 mode=self.mode, quiet=self.quiet)
        from resweep.study.in_trial_artifacts import InTrialArtifacts

        self.in_trial = InTrialArtifacts(self.storage, self.layout.root, self.artifact_keys)
        self.waits = resource_wait.for_study_file(self.layout.study_file)  # "waiting for resources"
        self._summarize()
        self.progress.start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = TrialSpec.from_tune_config(trial.config)
        self.specs[trial.trial_id] = spec
        self.results.trial_started(trial.trial_id, spec.label, spec.seed, spec.params, spec.experiment,
                                   group=spec.group)
        roles = self._artifact_roles(trial.trial_id, spec)
        if self.artifact_keys or roles:  # stages: which artifacts the trial reads (role -> key)
            self.results.annotate(trial.trial_id, artifacts=json.dumps(roles))
        self._summarize()
        self.progress.run_started(trial.trial_id, f"{trial.trial_id} {spec.describe()}", spec.iterations)

    def _artifact_roles(self, trial_id: str, spec: TrialSpec) -> dict[str, str]:
        """role -> key, as the driver computed them (those made in the trial are recorded in
        artifacts.parquet when their commit marker appears in the storage)."""
        if not (self.artifact_keys or spec.stage_keys):
            return {}
        from resweep.config import ExperimentConfig

        experiment = ExperimentConfig.from_dict(spec.experiment, source="<trial spec>")
        return self.in_trial.trial_started(trial_id, experiment, spec.stage_keys)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.results.trial_result(trial.trial_id, result)
        self.in_trial.check(trial.trial_id)  # a stage it made: committed before its first report
        self._summarize()
        self.progress.run_report(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = self.specs.get(trial.trial_id)
        total = spec.iterations if spec else int(self.results.meta.get("iterations") or 0)
        status = self.results.trial_completed(trial.trial_id, trial.last_result, total)
        self.in_trial.trial_ended(trial.trial_id)
        self._relay_logs(force=True)
        self._forget(trial.trial_id)
        self._summarize()
        self.progress.run_ended(trial.trial_id, status)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._relay_logs(force=True)
        line, detail = self._error_text(trial)
        self.results.trial_errored(trial.trial_id, f"{line}\n\n{detail}" if detail else line)
        self.in_trial.trial_ended(trial.trial_id, error=line)
        self._forget(trial.trial_id)
        self.progress.message(line, style="bold red")
        self._summarize()
        self.progress.run_ended(trial.trial_id)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self._relay_logs()
        if self.waits is not None:
            self.waits.update(trials, self.progress)
        self.progress.tick()

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for trial_id in self.results.mark_lost({t.trial_id for t in trials}):
            self.progress.message(f"{trial_id}: lost with the driver before Tune recorded it; marked errored")
        self._relay_logs(force=True)
        stop_relay(self.relay)
        self.results.compact()  # one chunk per dataset: the study reads fast and as one file
        self._summarize()
        self.progress.stop()

    # ------------------------------------------------------------------ helpers
    def _summarize(self) -> None:
        best = self.results.best(self.objective, self.mode)
        self.progress.set_summary(
            self.results.counts(),
            (best[f"best.{self.objective}"], str(best["trial_id"])) if best else None,
        )

    def _forget(self, trial_id: str) -> None:
        """An ended trial (what it sent is drained already: it waits for delivery before it ends)."""
        self.specs.pop(trial_id, None)

    def _label(self, trial_id: str) -> str:
        spec = self.specs.get(trial_id)
        return f"{trial_id} ({spec.describe()})" if spec else trial_id

    def _relay_logs(self, force: bool = False) -> None:
        """Drain the relay: write what trials sent into the study folder, show their warnings."""
        now = time.monotonic()
        if not force and now - self.last_drain < DRAIN_INTERVAL_S:
            return
        self.last_drain = now
        try:
            batch = drain(self.relay)
        except Exception as exc:  # never end the study over it: the next drain tries again
            self.progress.message(f"trial logs not relayed this time: {type(exc).__name__}: {exc}")
            return
        self._take(batch)

    def _take(self, batch: dict[str, dict[str, Any]]) -> None:
        for trial_id, item in batch.items():
            write_relayed(item, log_path=self.layout.trial_log(trial_id),
                          error_path=self.layout.trial_error(trial_id), image_root=self.layout.images)
            for line in item.get("text", "").split("\n"):
                # errors come as one line from on_trial_error; continuation lines stay in the file
                if parse_level(line) == "WARNING":
                    text = line.split(" ", 3)[-1].strip()
                    self.progress.message(f"{self._label(trial_id)}: warning: {text}", style="yellow")

    def _error_text(self, trial: Any) -> tuple[str, str]:
        """(one line for the terminal, detail for trials.parquet's error column)."""
        log_path = self.layout.trial_log(trial.trial_id)
        summary_path = self.layout.trial_error(trial.trial_id)
        detail = _ray_error_text(trial) or ""
        summary = None
        if summary_path.is_file():
            try:
                summary = json.loads(summary_path.read_text())
            except ValueError:
                summary = None
        if summary:
            what = error_line(summary)
        else:  # the process died without a word (killed, out of memory): Ray's last line
            last = [ln for ln in detail.strip().splitlines() if ln.strip()]
            what = last[-1].strip() if last else "the trial process ended unexpectedly"
        where = f"; full log: {log_path}" if log_path.is_file() else ""
        return f"trial {self._label(trial.trial_id)} {Status.ERRORED.value}: {what}{where}", detail


def _ray_error_text(trial: Any) -> str | None:
    try:
        path = Path(trial.local_path) / "error.txt"
        return path.read_text() if path.is_file() else None
    except Exception:
        return None
