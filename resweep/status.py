"""The status of a run or trial: one definition for the engine's reports, the study's
Parquet files, Optuna bookkeeping and the analysis (no torch, no Ray)."""

from __future__ import annotations

from enum import Enum


class Status(str, Enum):
    """A trial's status as written in ``trials.parquet`` (docs/results-schema.md).

    A ``str`` enum: ``Status.FINISHED == "finished"``, so values read back from Parquet compare
    equal without conversion.
    """

    PENDING = "pending"  # reserved: known to the study, not started
    RUNNING = "running"
    FINISHED = "finished"  # ran all its iterations
    DIVERGED = "diverged"  # the loss collapsed: a result, not a crash
    PRUNED = "pruned"  # stopped early by the scheduler
    ERRORED = "errored"  # raised

    def __str__(self) -> str:
        return self.value

    @property
    def ended(self) -> bool:
        return self in ENDED


ENDED = frozenset({Status.FINISHED, Status.DIVERGED, Status.PRUNED, Status.ERRORED})
ALL_STATUSES = tuple(Status)
