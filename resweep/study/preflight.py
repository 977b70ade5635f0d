"""A study's preflight: the engine's checks (data, named files, feature-network weights) on every
configuration the study will run, not only its base, before Ray starts.

Grid and random studies: each seed group's resolved experiment (a variant that switches on a
method whose weights are missing is refused with the variant's label and the field). Optuna
studies: the base and each distribution's extreme values (the configurations ``validate_trials``
already builds), since the sampled ones exist only at run time. Data sections shared by many
configurations are read and verified once.
"""

from __future__ import annotations

import json
from typing import Any

from resweep.config import ExperimentConfig
from resweep.errors import ConfigError, DataError
from resweep.study.spec import StudyConfig


def study_experiments(study: StudyConfig) -> list[tuple[str, ExperimentConfig]]:
    """``(how an error names it, experiment)`` for each configuration to check (seed aside)."""
    if not study.is_optuna:
        experiments, groups = [], set()
        for spec in study.trial_specs():
            if spec.group not in groups:  # seeds of a group differ only by train.seed
                groups.add(spec.group)
                experiments.append((study.describe_trial(spec.label, spec.params),
                                    ExperimentConfig.from_dict(spec.experiment)))
        return experiments
    experiments = [("the base config", study.base)]
    for path, value, params in study.probe_overrides():
        experiments.append((f"space.{path} = {value!r}", study.base.with_overrides(params)))
    return experiments


# what every training run reports besides ``eval.*``, ``loss.*`` and ``<method>.*`` (engine/trainer.py)
TRAINING_METRICS = (
    "iteration", "lr", "time_per_step", "samples_per_second", "train_seconds", "startup_seconds",
)


def reportable_metrics(experiment: ExperimentConfig) -> tuple[set[str], set[str]]:
    """``(eval metrics, metric names)`` one configuration can report: the full
    ``eval.<set>.<metric>`` names (sets, averages, ``_baseline`` scores, NIQE where a set asks
    for it), and the short names a ``paper.metric`` may use (psnr, psnr_y, niqe ...)."""
    from resweep.engine.evaluate import METRIC_NAMES, NIQE_METRIC

    full: set[str] = set()
    short: set[str] = set(METRIC_NAMES)
    names = [*(s.display_name for s in experiment.eval.sets), *experiment.eval.averages]
    for name in names:
        full.update(f"eval.{name}.{m}{suffix}" for m in METRIC_NAMES for suffix in ("", "_baseline"))
    for eval_set in experiment.eval.sets:
        if eval_set.niqe:
            full.add(f"eval.{eval_set.display_name}.{NIQE_METRIC}")
            short.add(NIQE_METRIC)
    return full, short


def check_study_metrics(study: StudyConfig, experiments: list[tuple[str, ExperimentConfig]]) -> None:
    """Refuse an objective, a ``paper.metric`` or a ``baseline`` that no configuration of the
    study can report or match: such a study would run every trial and end with a table that
    cannot have its objective (or its reference)."""
    full: set[str] = set()
    short: set[str] = set()
    methods: set[str] = set()
    for _, experiment in experiments:
        f, s = reportable_metrics(experiment)
        full |= f
        short |= s
        methods |= set(experiment.enabled_methods)
    sets = sorted({m.split(".")[1] for m in full})
    for i, objective in enumerate(study.objectives):
        metric = objective.metric
        if metric.startswith("eval."):
            if metric not in full:
                raise ConfigError(
                    f"objective '{metric}' is reported by no configuration of the study: its "
                    f"evaluation sets are {sets} and their metrics "
                    f"{sorted({m.rsplit('.', 1)[1] for m in full})} (as eval.<set>.<metric>)",
                    field=f"objectives[{i}].metric",
                )
        elif not (metric in TRAINING_METRICS or metric.startswith("loss.")
                  or metric.split(".", 1)[0] in methods):
            raise ConfigError(
                f"objective '{metric}' is not a metric the training reports: use "
                f"eval.<set>.<metric> (sets {sets}), loss.total or loss.<term>, "
                f"{', '.join(TRAINING_METRICS)}, or <method>.<metric> of an enabled method",
                field=f"objectives[{i}].metric",
            )
    if study.paper is not None:
        metric = study.paper.metric
        known = full if metric.startswith("eval.") else short
        if metric not in known:
            raise ConfigError(
                f"paper.metric '{metric}' is reported by no configuration of the study; "
                f"it can be one of {sorted(short)}",
                field="paper.metric",
            )
    if study.baseline is not None:
        check_baseline(study)


def check_baseline(study: StudyConfig) -> None:
    """``baseline`` names a variant label, a row, or ``knob=value`` of a knob the study varies
    (with one of its grid/choice/variant values where the study lists them)."""
    wanted = str(study.baseline).strip()
    labels = [v.label for v in study.variants]
    # a variant label, a table row number, or a row name "label (knob=value, ...)"
    if wanted in labels or wanted.isdigit() or any(wanted.startswith(f"{x} (") for x in labels):
        return
    knobs = study.knobs
    parts = [part.strip() for part in wanted.split(",")]
    if all("=" in part for part in parts):
        for part in parts:
            _check_knob_value(study, wanted, part)
        return
    raise ConfigError(
        f"baseline '{wanted}' matches no row of the study: name a variant label "
        f"({labels or 'the study has none'}) or knob=value of a knob it varies ({knobs or 'none'})",
        field="baseline",
    )


def _check_knob_value(study: StudyConfig, wanted: str, part: str) -> None:
    from resweep.search_spaces import Choice, Grid

    knob, _, value = (x.strip() for x in part.partition("="))
    paths = [p for p in study.knobs if p == knob or p.endswith("." + knob)]
    if not paths:
        raise ConfigError(
            f"baseline '{wanted}': '{knob}' is not a knob the study varies ({study.knobs or 'none'})",
            field="baseline",
        )
    listed: list[Any] = []
    for path in paths:
        dist = study.space.get(path)
        if isinstance(dist, Grid | Choice):
            listed += list(dist.values)
        elif dist is not None:
            return  # a continuous knob: any value may be drawn
        listed += [v.overrides[path] for v in study.variants if path in v.overrides]
        if dist is None and any(path not in v.overrides for v in study.variants):
            listed.append(_dotted_get(study.base.to_dict(), path))  # rows that keep the base's value
    if not any(_same_value(value, v) for v in listed):
        raise ConfigError(
            f"baseline '{wanted}': {knob} takes the values {listed} in this study", field="baseline"
        )


def _dotted_get(data: dict[str, Any], path: str) -> Any:
    node: Any = data
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _same_value(text: str, value: Any) -> bool:
    import yaml

    try:
        parsed = float(text)  # YAML reads 3e-4 as a string
    except ValueError:
        try:
            parsed = yaml.safe_load(text)
        except yaml.YAMLError:
            parsed = text
    if isinstance(parsed, int | float) and isinstance(value, int | float) and not isinstance(value, bool):
        return float(parsed) == float(value)
    return parsed == value or str(value) == text


def check_tracking(study: StudyConfig) -> None:
    """A tracker whose package is not installed (resweep.study.tracking imports them lazily)."""
    import importlib.util

    if study.tracking.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise ConfigError("MLflow is not installed: pip install 'resweep[tracking]', or remove "
                          "tracking.mlflow", field="tracking.mlflow")
    if study.tracking.tensorboard and importlib.util.find_spec("tensorboardX") is None:
        raise ConfigError("tensorboardX (Ray Tune's event writer) is not installed: pip install "
                          "'resweep[tracking]', or remove tracking.tensorboard", field="tracking.tensorboard")


def preflight_study(study: StudyConfig, *, verify_images: bool = True) -> None:
    """Raise ConfigError/DataError, naming the configuration, for any that could not run."""
    from resweep.engine.preflight import check_named_files, preflight

    check_tracking(study)  # a tracker's package missing: say which extra, before any data is read
    experiments = study_experiments(study)
    check_study_metrics(study, experiments)
    data_checked: set[str] = set()
    for where, experiment in experiments:
        data = json.dumps(experiment.model_dump(mode="json", include={"task", "data", "eval"}), sort_keys=True)
        try:
            if data in data_checked:
                check_named_files(experiment)
            else:
                preflight(experiment, verify_images=verify_images)
                data_checked.add(data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", source=exc.source, field=exc.field) from None
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
