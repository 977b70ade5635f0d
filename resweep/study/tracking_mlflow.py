"""MLflow for a study (``tracking.mlflow``): each seed group is a parent run, its seeds nested
runs. Runs in :class:`~resweep.study.tracking.TrackerThread`, never on the driver's loop.

A trial's run: params (its knobs, seed, label, group, and the full config as ``config.*``),
every report's metrics at the training iteration, at its end ``final.*`` / ``best.*`` as in
``trials.parquet``, the status (finished -> FINISHED, pruned -> KILLED, diverged and errored
-> FAILED; the resweep word in the tag ``resweep.status``), the keys of the stage artifacts it
read (tags ``resweep.artifact.<role>``) and the path of its log (tag ``resweep.log`` and the
run's description). A group's run ends when all its seeds have: with every seed finished it
gets the mean over seeds of each ``final.*`` (the number Optuna is told), otherwise FAILED
(a diverged or errored seed) or KILLED (a pruned one), the rule of ``seed_groups``.

Runs carry tags (``resweep.study_id``, ``resweep.group``, ``resweep.trial_id``) by which a
resumed study finds and continues them instead of making new ones.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from pathlib import Path
from typing import Any

from resweep.status import Status
from resweep.study.layout import StudyLayout, parquet_exists, read_parquet
from resweep.study.table_rows import flatten
from resweep.study.trial_spec import TrialSpec

BATCH_METRICS = 1000  # MLflow's limit per log_batch request
BATCH_PARAMS = 100
PARAM_VALUE_CHARS = 500  # the limit of older servers (3.x allows 6000)
MLFLOW_STATUS = {
    Status.FINISHED.value: "FINISHED", Status.PRUNED.value: "KILLED",
    Status.DIVERGED.value: "FAILED", Status.ERRORED.value: "FAILED",
}
_UNSAFE_KEY = re.compile(r"[^A-Za-z0-9_\-. :/]")


def _key(name: str) -> str:
    return _UNSAFE_KEY.sub("_", name)[:250]


def _value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text[:PARAM_VALUE_CHARS]


class MlflowTracker:
    def __init__(self, *, uri: str, experiment: str, study_dir: str, seeds: int):
        self.uri = uri
        self.experiment = experiment
        self.layout = StudyLayout(Path(study_dir))
        self.study_id = hashlib.sha1(str(self.layout.root.resolve()).encode()).hexdigest()[:16]
        self.seeds = seeds
        self.client: Any = None
        self.experiment_id = ""
        self.runs: dict[str, str] = {}  # trial id -> run id
        self.groups: dict[str, str] = {}  # group -> parent run id
        self.trial_group: dict[str, str] = {}
        self.pending: dict[str, list[Any]] = {}  # run id -> metrics not sent yet

    def describe(self) -> str:
        return f"MLflow at {self.uri}"

    def _connect(self) -> None:
        if self.client is not None:
            return
        # MLflow's default retries an unreachable server for minutes; a tracker must say so soon
        # (the user's own settings of these variables win)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
        # its "View run ... at" lines would cut through the study's progress display
        os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self.uri)
        found = client.get_experiment_by_name(self.experiment)
        if found is None:
            try:
                self.experiment_id = client.create_experiment(self.experiment)
            except Exception:  # made meanwhile by another driver
                found = client.get_experiment_by_name(self.experiment)
                if found is None:
                    raise
        if found is not None:
            self.experiment_id = found.experiment_id
        self.client = client

    def _find(self, **tags: str) -> str | None:
        """A run of this study made by an earlier driver (resume)."""
        where = " and ".join(f"tags.`resweep.{k}` = '{v}'" for k, v in {"study_id": self.study_id, **tags}.items())
        runs = self.client.search_runs([self.experiment_id], filter_string=where, max_results=1)
        return runs[0].info.run_id if runs else None

    def _run(self, name: str, tags: dict[str, str], params: dict[str, Any], **find: str) -> str:
        run_id = self._find(**find)
        if run_id is not None:
            self.client.update_run(run_id, status="RUNNING")
            return run_id
        all_tags = {"resweep.study_id": self.study_id, "resweep.study_dir": str(self.layout.root),
                    **{f"resweep.{k}": v for k, v in find.items()}, **tags}
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=all_tags).info.run_id
        self._log_params(run_id, params)
        return run_id

    def _log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(_key(k), _value(v)) for k, v in params.items()]
        for i in range(0, len(items), BATCH_PARAMS):
            self.client.log_batch(run_id, params=items[i:i + BATCH_PARAMS])

    # ------------------------------------------------------------------ events
    def start(self, trial_id: str, payload: dict[str, Any]) -> None:
        self._connect()
        spec = TrialSpec.from_payload(payload)
        group = spec.group or trial_id
        self.trial_group[trial_id] = group
        if group not in self.groups:
            what = spec.label or ", ".join(f"{k}={v}" for k, v in spec.params.items()) or "base"
            self.groups[group] = self._run(
                f"{group} {what}", {}, {"label": spec.label, **spec.params}, kind="group", group=group,
            )
        if trial_id in self.runs:  # retried by Tune after an error
            self.client.update_run(self.runs[trial_id], status="RUNNING")
            return
        log = str(self.layout.trial_log(trial_id))
        tags = {"mlflow.parentRunId": self.groups[group], "resweep.log": log,
                "mlflow.note.content": f"resweep trial {trial_id}; log: {log}"}
        params = {**spec.params, "seed": spec.seed, "label": spec.label, "group": group,
                  **{f"config.{k}": v for k, v in flatten(spec.experiment).items()}}
        self.runs[trial_id] = self._run(f"{trial_id} {spec.describe()}", tags, params,
                                        kind="trial", trial_id=trial_id, group=group)

    def result(self, trial_id: str, step: int, wall_s: float, metrics: dict[str, float]) -> None:
        from mlflow.entities import Metric

        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        millis = int(wall_s * 1000)
        batch = self.pending.setdefault(run_id, [])
        batch.extend(Metric(_key(k), v, millis, step) for k, v in metrics.items())
        if len(batch) >= BATCH_METRICS:
            self._send(run_id)

    def _send(self, run_id: str) -> None:
        batch = self.pending.pop(run_id, [])
        for i in range(0, len(batch), BATCH_METRICS):
            self.client.log_batch(run_id, metrics=batch[i:i + BATCH_METRICS])

    def flush(self) -> None:
        for run_id in list(self.pending):
            self._send(run_id)

    def end(self, trial_id: str) -> None:
        from mlflow.entities import Metric, RunTag

        run_id = self.runs.get(trial_id)
        if run_id is None:
            return
        self._send(run_id)
        rows = _trial_rows(self.layout)
        row = rows.get(trial_id, {})
        status = str(row.get("status") or Status.ERRORED.value)
        step = int(row.get("iterations") or 0)
        now = int(time.time() * 1000)
        finals = [Metric(_key(k), float(v), now, step) for k, v in row.items()
                  if k.startswith(("final.", "best.")) and _number(v)]
        tags = [RunTag("resweep.status", status)]
        if row.get("error"):
            tags.append(RunTag("resweep.error", str(row["error"])[:5000]))
        for role, key in json.loads(row.get("artifacts") or "{}").items():
            tags.append(RunTag(_key(f"resweep.artifact.{role}"), str(key)))
        for i in range(0, len(finals), BATCH_METRICS):  # tags go with the first batch
            self.client.log_batch(run_id, metrics=finals[i:i + BATCH_METRICS], tags=tags if i == 0 else [])
        if not finals:
            self.client.log_batch(run_id, tags=tags)
        self.client.set_terminated(run_id, MLFLOW_STATUS.get(status, "FAILED"))
        self._end_group(self.trial_group.get(trial_id, ""), rows)

    def _end_group(self, group: str, rows: dict[str, dict[str, Any]]) -> None:
        """All seeds ended: the group's run ends by the rule of ``seed_groups``."""
        from mlflow.entities import Metric, RunTag

        run_id = self.groups.get(group)
        members = [r for r in rows.values() if r.get("group") == group]
        statuses = {str(r.get("status")) for r in members}
        ended = [r for r in members if Status(str(r.get("status") or "running")).ended]
        if run_id is None or len(ended) < self.seeds:
            return
        if statuses & {Status.DIVERGED.value, Status.ERRORED.value}:
            outcome, mlflow_status = "fail", "FAILED"
        elif Status.PRUNED.value in statuses:
            outcome, mlflow_status = "pruned", "KILLED"
        else:
            outcome, mlflow_status = "complete", "FINISHED"
        metrics = []
        if outcome == "complete":
            keys = set.intersection(*({k for k, v in r.items() if k.startswith("final.") and _number(v)}
                                      for r in members))
            step = max(int(r.get("iterations") or 0) for r in members)
            now = int(time.time() * 1000)
            metrics = [Metric(_key(k), sum(float(r[k]) for r in members) / len(members), now, step)
                       for k in sorted(keys)]
        self.client.log_batch(run_id, metrics=metrics, tags=[
            RunTag("resweep.status", outcome), RunTag("resweep.seeds_ended", str(len(ended))),
        ])
        self.client.set_terminated(run_id, mlflow_status)

    def close(self) -> None:
        if self.client is not None:
            self.flush()


def _trial_rows(layout: StudyLayout) -> dict[str, dict[str, Any]]:
    if not parquet_exists(layout.trials):
        return {}
    return {str(r["trial_id"]): r for r in read_parquet(layout.trials).to_pylist()}


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value
