"""Diagnostics a method reports about the network it trained, beside the run's metrics.

A metric is one number per logging step; a diagnostic is a *sample* whose distribution is the
point, e.g. RCL's Fig. 2: the gaps ``d(negative) − d(positive)`` of many residual pairs before
and after pretraining. A method returns them from ``Method.diagnostics(model, dataset, phase)``
(phase ``start``: before the first step, ``end``: after the last); the ``train`` stage asks at
both phases, merges the groups by name and writes one JSON file per diagnostic into its
artifact (``diagnostics/<name>.json``); the dashboard draws each as overlaid densities, with
the share of each group above ``reference`` annotated, and ``reference_group`` (e.g. RCL's gaps
of the true noise) as a line over them. Torch-free: the dashboard reads them.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

Phase = Literal["start", "end"]
PHASES: tuple[Phase, ...] = ("start", "end")

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass
class Diagnostic:
    """Samples of one quantity, per group (e.g. ``{"before pretraining": [...], ...}``)."""

    name: str  # file stem: letters, digits, ``_.-`` (e.g. ``rcl.distance_gaps``)
    title: str
    x_title: str
    samples: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    #: the dashboard annotates the share of each group's samples above this value
    reference: float | None = 0.0
    #: a group that is the reference the others are read against (e.g. the true noise's
    #: curve in RCL's Fig. 2): drawn as a line, not bars
    reference_group: str | None = None

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"diagnostic name '{self.name}' must be letters, digits, '_', '.', '-'")
        if self.reference_group is not None and self.reference_group not in self.samples:
            raise ValueError(f"diagnostic '{self.name}': reference_group '{self.reference_group}' is not a group")

    def to_json(self) -> str:
        data = asdict(self)
        data["samples"] = {k: [float(v) for v in vs] for k, vs in self.samples.items()}
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> Diagnostic:
        data: dict[str, Any] = json.loads(text)
        samples = {str(k): [float(v) for v in vs] for k, vs in dict(data.pop("samples", {})).items()}
        return cls(samples=samples, **{k: data[k] for k in ("name", "title", "x_title", "note", "reference", "reference_group")
                            if k in data})

    def share_above(self, group: str | None = None) -> float:
        """Fraction of the group's (default: all groups' but ``reference_group``'s) finite samples
        above ``reference`` (NaN without samples or reference)."""
        if group is not None:
            groups = [self.samples[group]]
        else:
            groups = [v for g, v in self.samples.items() if g != self.reference_group]
        values = [v for vs in groups for v in vs if math.isfinite(v)]
        if not values or self.reference is None:
            return math.nan
        return sum(v > self.reference for v in values) / len(values)


def merge_diagnostics(*batches: Iterable[Diagnostic]) -> dict[str, Diagnostic]:
    """One diagnostic per name, the groups of every batch side by side (later groups of the
    same name replace earlier ones)."""
    out: dict[str, Diagnostic] = {}
    for batch in batches:
        for diagnostic in batch:
            if diagnostic.name in out:
                out[diagnostic.name].samples.update(diagnostic.samples)
                if diagnostic.reference_group is not None:
                    out[diagnostic.name].reference_group = diagnostic.reference_group
            else:
                out[diagnostic.name] = Diagnostic(**{**asdict(diagnostic), "samples": dict(diagnostic.samples)})
    return out
