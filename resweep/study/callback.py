"""The driver side of a running study: a Ray Tune callback that records every report in the
study's files, shows live progress, relays trials' warnings and errors from their log files,
and turns a trial's error into one line plus the path of its full log."""

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
from resweep.trainables.trial_log import error_line, parse_level

TAIL_INTERVAL_S = 1.0


class LogTail:
    """New complete lines of a growing file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0
        self.partial = ""

    def new_lines(self) -> list[str]:
        try:
            with open(self.path, encoding="utf-8", errors="replace") as handle:
                handle.seek(self.offset)
                text = handle.read()
                self.offset = handle.tell()
        except FileNotFoundError:
            return []
        text = self.partial + text
        lines = text.split("\n")
        self.partial = lines.pop()
        return lines


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
        self.specs: dict[str, TrialSpec] = {}
        self.tails: dict[str, LogTail] = {}  # running trials only
        self.relayed: dict[str, int] = {}  # errored trials (Tune may retry them): bytes relayed
        self.last_tail = 0.0
        self.progress = Progress(self.name, total_runs=self.total_trials, objective=self.objective,
                                 mode=self.mode, quiet=self.quiet)
        self.waits = resource_wait.for_study_file(self.layout.study_file)  # "waiting for resources"
        self._summarize()
        self.progress.start()

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = TrialSpec.from_tune_config(trial.config)
        self.specs[trial.trial_id] = spec
        self.results.trial_started(trial.trial_id, spec.label, spec.seed, spec.params, spec.experiment,
                                   group=spec.group)
        if self.artifact_keys:  # stages: which artifacts the trial reads (role -> key)
            self.results.annotate(trial.trial_id, artifacts=json.dumps(self._artifact_roles(spec)))
        if trial.trial_id not in self.tails:  # a retried trial appends: relay only the new lines
            tail = self.tails[trial.trial_id] = LogTail(self.layout.trial_log(trial.trial_id))
            tail.offset = self.relayed.pop(trial.trial_id, 0)
        self._summarize()
        self.progress.run_started(trial.trial_id, f"{trial.trial_id} {spec.describe()}", spec.iterations)

    def _artifact_roles(self, spec: TrialSpec) -> dict[str, str]:
        from resweep.config import ExperimentConfig
        from resweep.stages.on_ray import PreparedStages

        experiment = ExperimentConfig.from_dict(spec.experiment, source="<trial spec>")
        return PreparedStages(self.storage, self.artifact_keys).roles_for(experiment)

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.results.trial_result(trial.trial_id, result)
        self._summarize()
        self.progress.run_report(trial.trial_id, result)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        spec = self.specs.get(trial.trial_id)
        total = spec.iterations if spec else int(self.results.meta.get("iterations") or 0)
        status = self.results.trial_completed(trial.trial_id, trial.last_result, total)
        self._relay_logs(force=True)
        self._forget(trial.trial_id)
        self._summarize()
        self.progress.run_ended(trial.trial_id, status)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._relay_logs(force=True)
        line, detail = self._error_text(trial)
        self.results.trial_errored(trial.trial_id, f"{line}\n\n{detail}" if detail else line)
        self._forget(trial.trial_id, keep_offset=True)
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

    def _forget(self, trial_id: str, keep_offset: bool = False) -> None:
        """An ended trial: its log is no longer followed (what it wrote is relayed already)."""
        tail = self.tails.pop(trial_id, None)
        if keep_offset and tail is not None:
            self.relayed[trial_id] = tail.offset
        self.specs.pop(trial_id, None)

    def _label(self, trial_id: str) -> str:
        spec = self.specs.get(trial_id)
        return f"{trial_id} ({spec.describe()})" if spec else trial_id

    def _relay_logs(self, force: bool = False) -> None:
        """Show trials' WARNING and ERROR lines (the full text stays in their log files)."""
        now = time.monotonic()
        if not force and now - self.last_tail < TAIL_INTERVAL_S:
            return
        self.last_tail = now
        for trial_id, tail in list(self.tails.items()):
            for line in tail.new_lines():
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
