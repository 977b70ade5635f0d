"""``resweep extend DIR --seeds 3 4 / --trials N``: more seeds or samples for a study that ran.

Ray Tune cannot grow an experiment that ended (its variant generator and searcher are done,
and ``Tuner.restore`` only continues what was planned). An extension is therefore a **new
Tune experiment in the same study folder** (``tune-ext1``, ``tune-ext2``, ... beside ``tune``)
whose trials are written by the same callback into the same tables (``trials.parquet`` and
the other parts): a study is its files, not one Tune experiment.

The steps: an interrupted study is first resumed to its end (its unfinished trials continue
from their checkpoints, as ``resweep resume``); then ``study.yaml`` gets the new seeds /
``search.num_samples``; then :func:`run_missing` runs what the updated study lacks. What a
study lacks is always computed from ``study.yaml`` and the trials that ended, so a finished
trial is never rerun, and an extension killed before Tune saved anything is completed by
``resweep resume`` (or ``resweep extend DIR`` without flags).

- grid / random: the trials of the updated study whose (seed group, seed) has no ended row.
  Random draws are reproducible by the search seed, and ``num_samples`` more draws start with
  the same ones, so earlier groups keep their ids.
- Optuna, ``--trials N``: the searcher (seed groups around Optuna, the sampler with its random
  state, the in-memory or persistent Optuna study) is restored from the last experiment that
  had one and asks N more configurations; each runs on every seed of the study.
- Optuna, ``--seeds``: the configurations whose groups Optuna was told COMPLETE run on the new
  seeds, as a plain list of trials (no searcher). Optuna is **not** told again: its COMPLETE
  trials cannot change value, and adding a second trial for the same configuration would count
  it twice in TPE's density estimate. So Optuna's values stay the means over the seeds the
  sampler knew when it chose; the tables (and ``resweep report``) use every seed. Later
  ``--trials`` groups run on all seeds and are told the mean over all of them. Groups told
  FAIL or PRUNED are not rerun.

``study.json`` records each extension (``extensions``: when, what was added, which
experiments ran it) and the list of Tune experiments (``experiments``; ``resweep resume``
continues the last).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resweep.config import read_yaml
from resweep.errors import ConfigError, ResweepError
from resweep.study.extension_runs import (
    ENDED_STATUSES,
    EXTENSIONS_KEY,
    planned_trials,
    read_meta,
    run_missing,
    write_meta,
)
from resweep.study.layout import StudyLayout
from resweep.study.results import count_ended, count_statuses, read_trials
from resweep.study.spec import StudyConfig, study_from_dict, study_to_yaml


# --------------------------------------------------------------------------- the command
def extend_study(
    study_dir: str | Path, *, seeds: Sequence[int] = (), trials: int = 0,
    address: str | None = None, quiet: bool = False, num_cpus: int | None = None,
) -> Path:
    """Add ``seeds`` and/or ``trials`` (random/Optuna samples) to a study that ran; see the
    module docstring. Returns the study folder."""
    from resweep.study.driver_lock import driver_lock
    from resweep.study.runner import resume_study

    layout = StudyLayout(Path(study_dir).resolve())
    if not layout.study_file.is_file():
        raise ResweepError(f"{layout.root} is not a study folder (no {layout.study_file.name})")
    data = read_yaml(layout.study_file)
    study = study_from_dict(data, source=str(layout.study_file))
    seeds = [int(s) for s in seeds]
    _check_request(study, seeds, trials)
    from resweep.study.preflight import preflight_study

    preflight_study(study)  # data can move between the study and its extension: say so before Ray starts

    rows = read_trials(layout.root)
    ended = count_ended(count_statuses(rows))
    if any(str(r.get("status")) not in ENDED_STATUSES for r in rows) or ended < planned_trials(layout, study):
        print(f"study '{study.name}' did not end: resuming it before extending it")
        resume_study(layout.root, address=address, quiet=quiet, num_cpus=num_cpus)

    with driver_lock(layout.root):
        return _extend_locked(layout, data, study, seeds, trials, address=address, quiet=quiet, num_cpus=num_cpus)


def _extend_locked(
    layout: StudyLayout, data: dict[str, Any], study: StudyConfig, seeds: list[int], trials: int, *,
    address: str | None, quiet: bool, num_cpus: int | None,
) -> Path:
    if seeds or trials:
        data["seeds"] = [*study.seeds, *seeds]
        if trials:
            data.setdefault("search", {})["num_samples"] = study.search.num_samples + trials
        study = study_from_dict(data, source=str(layout.study_file))
        from resweep.fileio import write_text_atomic

        write_text_atomic(layout.study_file, study_to_yaml(study))
        meta = read_meta(layout)
        meta["seeds"] = study.seeds
        meta.setdefault(EXTENSIONS_KEY, []).append({
            "at": time.strftime("%Y-%m-%d %H:%M:%S"), "seeds": seeds, "trials": trials, "experiments": [],
        })
        write_meta(layout, meta)
        what = " and ".join(x for x in (f"seeds {seeds}" if seeds else "", f"{trials} trial(s)" if trials else "") if x)
        print(f"extending study '{study.name}' by {what}")
    storage = study.storage or str(layout.root)
    if not run_missing(study, layout, storage, address=address, quiet=quiet, num_cpus=num_cpus, lock=False):
        print(f"study '{study.name}': nothing to run (every trial of {layout.study_file.name} has ended)")
    return layout.root


def _check_request(study: StudyConfig, seeds: list[int], trials: int) -> None:
    again = sorted(set(seeds) & set(study.seeds))
    if again:
        raise ConfigError(f"seeds {again} are already in the study (its seeds: {study.seeds})", field="seeds")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"seeds {seeds} repeat a seed", field="seeds")
    if trials < 0:
        raise ConfigError("--trials must be positive", field="search.num_samples")
    if trials and study.search.algorithm == "grid":
        raise ConfigError(
            "a grid study has no samples to add: extend it by --seeds, or start a study with a "
            "wider space and `warm_start: [this study]` (its finished trials are reused)",
            field="search.algorithm",
        )
    if (seeds or trials) and study.budget.max_trials is not None and not study.is_optuna:
        raise ConfigError(
            f"budget.max_trials ({study.budget.max_trials}) cuts this study's list of trials, and "
            "an extension would be cut by it too; remove it from study.yaml first",
            field="budget.max_trials",
        )


