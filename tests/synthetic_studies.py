"""Study folders with per-image values chosen by the test (so the answer is known), written the
way the platform writes them (study.json + trials/per_image Parquet; no curves)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

IMAGES = tuple(f"im{k:02d}" for k in range(12))
SET = "Set5"
METRIC = "psnr_y"
OBJECTIVE = f"eval.{SET}.{METRIC}"
ITERATION = 100


@dataclass
class Row:
    """One row: ``value(seed, image)`` per image; ``diverged``: seeds that collapsed."""

    label: str
    value: Callable[[int, str], float]
    params: dict[str, Any] = field(default_factory=dict)
    seeds: Sequence[int] = (0, 1, 2)
    diverged: Sequence[int] = ()


def image_offsets(seed: int = 7) -> dict[str, float]:
    rng = np.random.default_rng(seed)
    return {img: float(rng.normal(0, 2)) for img in IMAGES}


def write_study(root: Path, rows: Sequence[Row], *, name: str = "synthetic", baseline: str | None = None,
                paper: dict[str, Any] | None = None, knobs: Sequence[str] = ()) -> Path:
    trials, per_image = [], []
    for r, row in enumerate(rows):
        for s in row.seeds:
            tid = f"r{r}_s{s}"
            rec: dict[str, Any] = {"trial_id": tid, "label": row.label, "seed": s, "iterations": ITERATION,
                                   "time_total_s": 1.0, "error": None}
            for k, v in row.params.items():
                rec[f"param.{k}"] = v
            if s in row.diverged:
                rec.update(status="diverged", error="loss diverged: nan")
                rec[f"final.{OBJECTIVE}"] = None
            else:
                values = [row.value(s, img) for img in IMAGES]
                rec.update(status="finished")
                rec[f"final.{OBJECTIVE}"] = float(np.mean(values))
                per_image += [{"trial_id": tid, "iteration": ITERATION, "set": SET, "image": img, METRIC: v}
                              for img, v in zip(IMAGES, values, strict=True)]
            trials.append(rec)
    root.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(trials), root / "trials.parquet")
    pq.write_table(pa.Table.from_pylist(per_image), root / "per_image.parquet")
    labels = [row.label for row in rows if row.label]
    meta = {"name": name, "description": "constructed", "knobs": list(knobs),
            "seeds": sorted({s for row in rows for s in row.seeds}),
            "objectives": [{"metric": OBJECTIVE, "mode": "max"}], "baseline": baseline,
            "variants": list(dict.fromkeys(labels)), "paper": paper, "iterations": ITERATION,
            "total_trials": len(trials), "task": {"kind": "sr", "scale": 4}}
    (root / "study.json").write_text(json.dumps(meta))
    return root
