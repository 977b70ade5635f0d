"""``--paper-schedule``: a study's ``paper_schedule`` overrides, and the rule that no trial keeps
a reduced training length under them.

The rule, in full (README "A study file", docs/study.md):

1. A study-level ``paper_schedule`` key that is a config path sets ``base``. Any key, config
   path or longer, also reaches inside every section of ``base`` or of a variant's overrides
   that holds its parent: ``model.init_from.experiment.train.iterations`` scales the
   pretraining stage each row defines. A key that reaches nothing is an error naming it.
2. A variant's override of the same path wins (a row is what it overrides: an RCAN row keeps
   its model). A row whose training length differs from the base's says its paper value in its
   own ``paper_schedule`` mapping (applied to that row's overrides, after the study's).
3. Under the paper schedule every training length of every trial must change: its
   ``train.iterations`` and step-schedule ``milestones``, and inside each stage it makes, the
   stage's ``steps``/``iterations`` (a ``train`` stage's experiment: the same, recursively).
   A length that stays is an error unless ``paper_schedule_keeps`` (study-level, or the row's
   own) names it with the reason, e.g. ``{train.iterations: "the paper trains this row 5k"}``.
   A ``paper_schedule_keeps`` entry that names a length the schedule changes is an error too:
   the exemptions stay true.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from resweep.config import config_path_exists, set_dotted
from resweep.errors import ConfigError

if TYPE_CHECKING:
    from resweep.config import ExperimentConfig
    from resweep.stages import StageDefinition
    from resweep.study.spec import StudyConfig

#: fields that hold a stage kind's length (a new kind names its length one of these)
STAGE_LENGTH_FIELDS = ("steps", "iterations")


def apply_paper_schedule(data: dict[str, Any], *, source: str = "<study>") -> dict[str, Any]:
    """``data`` (a study mapping) with its ``paper_schedule`` applied (rules 1 and 2 above), as a
    deep copy.

    Only existing sections are entered, so ``model.init_from.experiment.methods.rcl.crop_size``
    reaches the RCL stages and leaves the Noise2Noise stage without an RCL section. The copy
    matters: YAML anchors and merge keys (``<<: *pretrain``) make the variants share one mapping
    object, which must not be changed once per variant.
    """
    data = copy.deepcopy(data)
    base = data.setdefault("base", {})
    variants = [v for v in data.get("variants") or [] if isinstance(v, dict)]
    for key, value in (data.get("paper_schedule") or {}).items():
        reached = False
        if config_path_exists(key):
            set_dotted(base, key, value, source=source)
            reached = True
        else:
            reached = _set_inside(base, key, value)
        for variant in variants:
            reached = _set_in_sections(variant.get("overrides") or {}, key, value) or reached
        if not reached:
            raise ConfigError(
                f"paper_schedule key '{key}' matches nothing: it is not a config path, and no "
                "section of base or of a variant's overrides (e.g. a model.init_from stage "
                "definition) has its parent",
                source=source, field=f"paper_schedule.{key}",
            )
    for index, variant in enumerate(data.get("variants") or []):
        if not isinstance(variant, dict):
            continue
        overrides = variant.setdefault("overrides", {})
        for key, value in (variant.get("paper_schedule") or {}).items():
            if key in overrides:
                overrides[key] = value
            elif not _set_in_sections(overrides, key, value):
                if not config_path_exists(key):
                    raise ConfigError(
                        f"paper_schedule key '{key}' of variant '{variant.get('label')}' matches "
                        "nothing: it is not a config path, and none of the row's overrides has its parent",
                        source=source, field=f"variants[{index}].paper_schedule.{key}",
                    )
                overrides[key] = value
    return data


def _set_in_sections(overrides: dict[str, Any], key: str, value: Any) -> bool:
    """Set ``key`` inside each override whose path is a strict prefix of it; whether any took it."""
    reached = False
    for path, container in overrides.items():
        if key.startswith(f"{path}.") and isinstance(container, dict):
            reached = _set_inside(container, key[len(path) + 1 :], value) or reached
    return reached


def _set_inside(container: dict[str, Any], dotted: str, value: Any) -> bool:
    """Set ``dotted`` in ``container`` if every parent section exists; whether it did."""
    *parents, last = dotted.split(".")
    node: Any = container
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return False
    node[last] = value
    return True


# --------------------------------------------------------------------------- rule 3
def training_lengths(experiment: ExperimentConfig, prefix: str = "") -> dict[str, Any]:
    """Every training length a run of ``experiment`` has, by name: ``train.iterations``, the
    step schedule's ``schedule.milestones``, and ``<stage role>.<field>`` for each stage it
    makes (a ``train`` stage: ``<role>.experiment.<its lengths>``, recursively)."""
    out: dict[str, Any] = {f"{prefix}train.iterations": experiment.train.iterations}
    if experiment.schedule.kind == "step":
        out[f"{prefix}schedule.milestones"] = list(experiment.schedule.milestones)
    for role, stage in sorted(experiment.stages().items()):
        out.update(_stage_lengths(stage, f"{prefix}{role}."))
    return out


def _stage_lengths(stage: StageDefinition, prefix: str) -> dict[str, Any]:
    from resweep.stages.train import TrainStage

    if isinstance(stage, TrainStage):
        return training_lengths(stage.config(), f"{prefix}experiment.")
    dumped = stage.model_dump(mode="json")
    out = {f"{prefix}{name}": dumped[name] for name in STAGE_LENGTH_FIELDS if name in dumped}
    for role, dependency in sorted(stage.dependencies().items()):
        out.update(_stage_lengths(dependency, f"{prefix}{role}."))
    return out


def check_training_lengths(reduced: StudyConfig, paper: StudyConfig, *, source: str = "<study>") -> None:
    """Rule 3: ``paper`` (the study under ``--paper-schedule``) changes every training length of
    every configuration of ``reduced`` (the same study without it), or says why it keeps one."""
    kept_by_row: dict[str, dict[str, Any]] = {}
    for label, short, long in _configurations(reduced, paper):
        long_lengths = training_lengths(long)
        kept_by_row[label] = {k: v for k, v in training_lengths(short).items() if long_lengths.get(k) == v}
    study_keeps = dict(paper.paper_schedule_keeps)
    row_keeps = {v.label: dict(v.paper_schedule_keeps) for v in paper.variants}
    problems = []
    for label, kept in kept_by_row.items():
        allowed = {**study_keeps, **row_keeps.get(label, {})}
        unexplained = {k: v for k, v in kept.items() if k not in allowed}
        if unexplained:
            row = f"variant '{label}'" if label else "the base config"
            problems.append(f"{row} keeps {', '.join(f'{k} = {v!r}' for k, v in unexplained.items())}")
    if problems:
        raise ConfigError(
            "under paper_schedule every training length must change: " + "; ".join(problems)
            + ". Give the row its paper value in the variant's own paper_schedule mapping, or name "
            "the length in paper_schedule_keeps (study-level or the variant's) with the reason",
            source=source, field="paper_schedule",
        )
    every_kept = {k for kept in kept_by_row.values() for k in kept}
    stale = [f"paper_schedule_keeps.{k}" for k in study_keeps if k not in every_kept]
    for index, variant in enumerate(paper.variants):
        stale += [f"variants[{index}].paper_schedule_keeps.{k}" for k in variant.paper_schedule_keeps
                  if k not in kept_by_row.get(variant.label, {})]
    if stale:
        raise ConfigError(
            f"{', '.join(stale)}: the paper schedule changes (or the trial has no) such a length; "
            "drop the exemption", source=source, field=stale[0],
        )


def _configurations(reduced: StudyConfig, paper: StudyConfig) -> list[tuple[str, ExperimentConfig, ExperimentConfig]]:
    """``(variant label, reduced experiment, paper experiment)`` per configuration (first seed).

    The paper schedule changes neither the variants, the space nor the seeds, so the two trial
    lists pair up in order (a variant's overrides may differ: the schedule reaches inside them)."""
    seed = reduced.seeds[0]
    short = [] if reduced.is_optuna else [t for t in reduced.trial_configs() if t["seed"] == seed]
    long = [] if paper.is_optuna else [t for t in paper.trial_configs() if t["seed"] == seed]
    if not short or len(short) != len(long):  # Optuna samples at run time: check the base config
        return [("", reduced.experiment_for({}, seed), paper.experiment_for({}, seed))]
    return [
        (a["label"], reduced.experiment_for(a["params"], seed), paper.experiment_for(b["params"], seed))
        for a, b in zip(short, long, strict=True)
    ]
