"""The study file: what to vary, how to search, what to optimise, with what resources.

Validated completely before any trial starts: every trial configuration a grid or variant
list produces is built, and every distribution is probed at its bounds, so a bad path or
value is reported with the path of the bad field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from resweep.config import ExperimentConfig, config_path_exists, read_yaml
from resweep.errors import ConfigError
from resweep.search_spaces import (
    Distribution,
    Grid,
    condition_holds,
    decode_params,
    expand_grid,
    probe_values,
    sample_random,
)
from resweep.study.paper_schedule import apply_paper_schedule, check_training_lengths
from resweep.study.trial_spec import TrialSpec

_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(_Strict):
    metric: str = Field(description="a reported metric, e.g. eval.Set5.psnr_y or time_per_step")
    mode: Literal["max", "min"] = "max"


class SearchConfig(_Strict):
    algorithm: Literal["grid", "random", "optuna_tpe", "optuna_multi"] = "grid"
    num_samples: int = Field(8, ge=1, description="configurations drawn (random, optuna); each runs once per seed")
    seed: int = Field(0, description="seed of the search algorithm itself")
    optuna_storage: str | None = Field(
        None, description="'sqlite' for <study>/optuna.db, or a database URL, so optuna-dashboard can open it"
    )


class SchedulerConfig(_Strict):
    kind: Literal["none", "asha", "hyperband"] = "none"
    grace_period: int | None = Field(None, ge=1, description="iterations before a trial may be stopped")
    reduction_factor: float = Field(3, gt=1)


class BudgetConfig(_Strict):
    max_trials: int | None = Field(None, ge=1, description="cap on the number of trials")
    time_limit_s: float | None = Field(None, gt=0, description="stop launching/continue trials after this")
    max_concurrent: int | None = Field(
        None, ge=1, description="trials at a time; default: as many as the cluster can hold, on an "
        "autoscaling cluster as many as it can grow to (its autoscaler's node types)",
    )


#: Ray's own resources: ResourcesConfig names CPU and GPU itself, the others are not per trial
_BUILTIN_RESOURCES = frozenset({"CPU", "GPU", "memory", "object_store_memory"})


class ResourcesConfig(_Strict):
    workers: int = Field(1, ge=1, description="Ray Train workers (DDP) per trial")
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(0, ge=0, description="fractions let small trials share a GPU")
    in_process: bool = Field(
        True, description="with one worker, train in the trial process (skips the nested worker group)"
    )
    custom_resources: dict[str, float] = Field(
        default_factory=dict,
        description="Ray custom resources each worker asks for besides its CPUs and GPUs, e.g. "
        "{trial_node: 1} to run trials only on nodes started with "
        "`ray start --resources='{\"trial_node\": 4}'`",
    )

    @field_validator("custom_resources")
    @classmethod
    def _custom_names(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if name in _BUILTIN_RESOURCES or name.startswith("node:"):
                raise ValueError(f"{name!r} is Ray's own resource: ask for it with cpus_per_worker / "
                                 "gpus_per_worker; custom_resources names custom resources")
            if not name or not amount > 0:
                raise ValueError(f"custom_resources.{name}: {amount} must be > 0")
        return value

    @model_validator(mode="after")
    def _whole_gpus_for_ddp(self) -> ResourcesConfig:
        # Ray may place two ranks of one trial on the same GPU when each asks for a fraction;
        # NCCL refuses two ranks on one device, so the trial would fail at its first collective
        if self.workers > 1 and 0 < self.gpus_per_worker < 1:
            raise ValueError(
                f"gpus_per_worker {self.gpus_per_worker} with workers {self.workers}: DDP ranks "
                "need a whole GPU each (NCCL cannot put two ranks of one trial on one device); "
                "use gpus_per_worker: 1, or workers: 1 to pack several small trials on a GPU"
            )
        return self


class FailureSettings(_Strict):
    max_failures: int = Field(1, ge=0, description="retries of an errored trial from its last checkpoint")


# --------------------------------------------------------------------------- tracking
class MlflowTracking(_Strict):
    uri: str = Field(
        min_length=1,
        description="MLflow tracking URI: http(s)://host:port of a server, or sqlite:///file.db",
    )
    experiment: str | None = Field(None, min_length=1, description="MLflow experiment; default: the study's name")


class TrackingConfig(_Strict):
    """Trackers that receive every trial as well (resweep.study.tracking); the study's own files
    stay the record."""

    mlflow: MlflowTracking | None = Field(
        None, description="one run per seed group, its seeds as nested runs (needs resweep[tracking])"
    )
    tensorboard: bool = Field(False, description="event files per trial in <study>/tensorboard/<trial_id>/")


#: why a training length stays under --paper-schedule (rule 3 of resweep.study.paper_schedule)
Reasons = dict[str, Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]]


class Variant(_Strict):
    """A named configuration: one row of an ablation table."""

    label: str
    overrides: dict[str, Any] = Field(default_factory=dict)
    paper_schedule: dict[str, Any] = Field(
        default_factory=dict,
        description="this row's own values under --paper-schedule (e.g. an Oracle row's longer "
        "train.iterations), applied to its overrides after the study's paper_schedule",
    )
    paper_schedule_keeps: Reasons = Field(
        default_factory=dict, description="training length -> why this row keeps it under --paper-schedule"
    )


class PaperReference(_Strict):
    table: str
    setting: str = ""
    metric: str = "psnr"
    values: dict[str, float | Literal["collapse"] | None] = Field(default_factory=dict)


class StudyConfig(_Strict):
    name: str
    description: str = ""
    base: ExperimentConfig = Field(default_factory=ExperimentConfig)
    space: dict[str, Distribution] = Field(default_factory=dict)
    variants: list[Variant] = Field(default_factory=list)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    objectives: list[Objective] = Field(
        default_factory=lambda: [Objective(metric="loss.total", mode="min")], min_length=1
    )
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    resources: ResourcesConfig = Field(default_factory=ResourcesConfig)
    failure: FailureSettings = Field(default_factory=FailureSettings)
    storage: str | None = Field(
        None, description="Ray Tune storage: local path or URI (s3://, gs://); default: the study folder"
    )
    baseline: str | None = Field(None, description="variant label (or knob=value) that Δ is measured against")
    paper: PaperReference | None = None
    paper_schedule: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides that restore the paper's full training schedule: config paths of "
        "base, or paths inside a stage definition (model.init_from.experiment.train.iterations); "
        "every training length must change under it (rules: resweep.study.paper_schedule)",
    )
    paper_schedule_keeps: Reasons = Field(
        default_factory=dict,
        description="training length -> why every trial keeps it under --paper-schedule (each other "
        "length must change; see resweep.study.paper_schedule)",
    )
    warm_start: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]] = Field(
        default_factory=list,
        description="earlier study folders (or Optuna storage URLs, sqlite:///...#study) to start "
        "from: Optuna is told their results first, grid/random reuse their finished trials "
        "(rules: resweep.study.warm_start)",
    )

    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        # the name becomes studies/<name> (and a prefix in the storage): it must stay one folder
        if not _SAFE_NAME.fullmatch(value) or value in (".", ".."):
            raise ValueError(
                f"'{value}' cannot name a study folder: use letters, digits, '.', '_' and '-' "
                "(no '/', no '..', not starting with '.' or '-'), at most 100 characters"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> StudyConfig:
        labels = [v.label for v in self.variants]
        if len(set(labels)) != len(labels):
            raise ValueError("variant labels must be unique")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be unique")
        if self.search.algorithm == "optuna_multi" and len(self.objectives) < 2:
            raise ValueError("search.algorithm optuna_multi needs two or more objectives")
        if self.search.algorithm not in ("optuna_multi",) and len(self.objectives) > 1 and self.scheduler.kind != "none":
            raise ValueError("schedulers (ASHA, HyperBand) optimise one objective: list one, or use scheduler none")
        if self.search.algorithm.startswith("optuna") and self.variants:
            raise ValueError("named variants need search.algorithm grid or random")
        if self.search.algorithm.startswith("optuna") and any(isinstance(d, Grid) for d in self.space.values()):
            raise ValueError("'grid' values need search.algorithm grid or random; use 'choice' with Optuna")
        return self

    # ------------------------------------------------------------------ derived
    @property
    def knobs(self) -> list[str]:
        """Every config path a trial may change (space and variants), seed excluded."""
        paths = list(self.space)
        for variant in self.variants:
            paths.extend(p for p in variant.overrides if p not in paths)
        return paths

    @property
    def primary(self) -> Objective:
        return self.objectives[0]

    def trial_configs(self) -> list[dict[str, Any]]:
        """Grid/random: the explicit list of trials, ``{"label", "params", "seed"}`` each."""
        base = self.base.to_dict()
        if self.search.algorithm == "grid":
            combos = expand_grid(self.space, base) if self.space else [{}]
        elif self.search.algorithm == "random":
            combos = sample_random(self.space, self.search.num_samples, self.search.seed, base)
        else:
            raise ValueError("trial_configs is for grid and random studies")
        variants = self.variants or [Variant(label="", overrides={})]
        trials = []
        for variant in variants:
            for params in combos:
                for seed in self.seeds:
                    trials.append(
                        {"label": variant.label, "params": {**variant.overrides, **params}, "seed": seed}
                    )
        if self.budget.max_trials is not None:
            trials = trials[: self.budget.max_trials]
        return trials

    def experiment_for(self, params: dict[str, Any], seed: int) -> ExperimentConfig:
        return self.base.with_overrides({**params, "train.seed": seed}, source=f"study '{self.name}'")

    def trial_spec(self, params: dict[str, Any], seed: int, *, label: str = "", group: str = "") -> TrialSpec:
        """Resolve one trial, once, on the driver: what it ships to the trial process."""
        params = decode_params(params)
        experiment = self.experiment_for(params, seed).to_dict()
        return TrialSpec(label=label, seed=seed, params=params, experiment=experiment, group=group)

    def trial_specs(self) -> list[TrialSpec]:
        """Grid/random: every trial resolved; trials that differ only by seed share a group."""
        groups: dict[str, str] = {}
        specs = []
        for trial in self.trial_configs():
            key = json.dumps([trial["label"], trial["params"]], sort_keys=True, default=str)
            group = groups.setdefault(key, f"g{len(groups):04d}")
            specs.append(self.trial_spec(trial["params"], trial["seed"], label=trial["label"], group=group))
        return specs

    @property
    def is_optuna(self) -> bool:
        return self.search.algorithm.startswith("optuna")

    def validate_trials(self) -> None:
        """Build every trial config (grid/random) or probe every distribution's bounds (Optuna)."""
        for path, dist in self.space.items():
            if not config_path_exists(path):
                raise ConfigError(f"unknown config path '{path}'", field=f"space.{path}")
            for cond in dist.when or {}:
                if not config_path_exists(cond):
                    raise ConfigError(f"unknown config path '{cond}' in 'when'", field=f"space.{path}.when")
        for i, variant in enumerate(self.variants):
            for path in variant.overrides:
                if not config_path_exists(path):
                    raise ConfigError(
                        f"unknown config path '{path}'", field=f"variants[{i}].overrides.{path}"
                    )
        if self.search.algorithm in ("grid", "random"):
            trials = self.trial_configs()
            if not trials:
                raise ConfigError("the study has no trials", field="space")
            for trial in trials:
                try:
                    self.experiment_for(trial["params"], trial["seed"])
                except ConfigError as exc:
                    raise ConfigError(
                        f"{self.describe_trial(trial['label'], trial['params'])} (seed {trial['seed']}) "
                        f"is not a valid config: {exc.message}",
                        field=self._study_field(trial["label"], exc.field),
                    ) from None
        else:
            for path, value, params in self.probe_overrides():
                try:
                    self.base.with_overrides(params)
                except ConfigError as exc:
                    raise ConfigError(f"value {value!r} is not valid: {exc}", field=f"space.{path}") from None
        for objective in self.objectives:
            if not objective.metric:
                raise ConfigError("empty metric name", field="objectives")


    def probe_overrides(self) -> list[tuple[str, Any, dict[str, Any]]]:
        """Optuna: ``(path, value, overrides)`` for each extreme value of each distribution (with
        the values its ``when`` needs): the configurations checked before the study starts."""
        base = self.base.to_dict()
        probes = []
        for path, dist in self.space.items():
            for value in probe_values(dist):
                params = {path: value}
                for cond, cond_value in (dist.when or {}).items():
                    params.setdefault(cond, cond_value)
                if condition_holds(dist, params, base):
                    probes.append((path, value, params))
        return probes

    @staticmethod
    def describe_trial(label: str, params: dict[str, Any]) -> str:
        """How errors name a grid/random configuration: its variant label, else its knobs."""
        if label:
            return f"variant '{label}'"
        if not params:
            return "the base config"
        return "trial " + ", ".join(f"{k}={v!r}" for k, v in params.items())

    def _study_field(self, label: str, field: str | None) -> str:
        """The study file's field behind a bad experiment field: a variant's override, a knob."""
        if label and field:
            index = next(i for i, v in enumerate(self.variants) if v.label == label)
            overrides = self.variants[index].overrides
            path = next((p for p in overrides if field == p or field.startswith(p + ".")
                         or p.startswith(field + ".")), None)
            if path is not None:
                return f"variants[{index}].overrides.{path}"
        if field:
            path = next((p for p in self.space if field == p or field.startswith(p + ".")), None)
            if path is not None:
                return f"space.{path}"
        return "space"


def _resolve_base(data: dict[str, Any], study_path: Path) -> dict[str, Any]:
    """``base`` may be inline or a path to an experiment YAML (relative to the study file);
    ``overrides`` (dotted) are applied on top."""
    from resweep.config import set_dotted

    base = data.get("base", {})
    if isinstance(base, str):
        base_path = (study_path.parent / base) if not Path(base).is_absolute() else Path(base)
        base = read_yaml(base_path)
    if not isinstance(base, dict):
        raise ConfigError("'base' must be a mapping or a path to a config file", source=str(study_path), field="base")
    overrides = data.pop("overrides", None) or {}
    for path, value in overrides.items():
        set_dotted(base, path, value, source=str(study_path))
    return base


def load_study(path: str | Path, *, paper_schedule: bool = False) -> StudyConfig:
    path = Path(path)
    data = read_yaml(path)
    if "base" not in data:
        experiment_keys = sorted(set(data) & set(ExperimentConfig.model_fields) - set(StudyConfig.model_fields))
        if experiment_keys:
            raise ConfigError(
                f"this is an experiment config (it has {experiment_keys}), not a study: train it "
                "with 'resweep train', or name it as the 'base' of a study file",
                source=str(path), field="base",
            )
        # without it the study would vary the default experiment (1,000 iterations of the default
        # model on the demo photographs), which is never what a study file without one meant
        raise ConfigError(
            "a study needs 'base': the experiment it varies, as a config file (relative to this "
            "study file) or an inline mapping; write 'base: {}' to study the default experiment "
            "on purpose",
            source=str(path), field="base",
        )
    data["base"] = _resolve_base(data, path)
    if isinstance(data.get("warm_start"), list):  # folders relative to the study file, like base
        data["warm_start"] = [
            str(path.parent / w.strip()) if isinstance(w, str) and w.strip() and "://" not in w
            and not Path(w.strip()).is_absolute() else w
            for w in data["warm_start"]
        ]
    return study_from_dict(data, source=str(path), paper_schedule=paper_schedule)


def study_from_dict(data: dict[str, Any], *, source: str = "<study>", paper_schedule: bool = False) -> StudyConfig:
    """Validate a study mapping; with ``paper_schedule``, apply its ``paper_schedule`` first and
    check that no trial keeps a reduced training length (:mod:`resweep.study.paper_schedule`)."""
    reduced = None
    if paper_schedule and data.get("paper_schedule"):
        reduced = _validated(data, source)
        data = apply_paper_schedule(data, source=source)
    study = _validated(data, source)
    if reduced is not None:
        check_training_lengths(reduced, study, source=source)
    return study


def _validated(data: dict[str, Any], source: str) -> StudyConfig:
    from resweep.config import _config_error

    try:
        study = StudyConfig.model_validate(data)
    except ValidationError as exc:
        raise _config_error(exc, source) from None
    try:
        study.validate_trials()
    except ConfigError as exc:
        raise ConfigError(exc.message, source=source, field=exc.field) from None
    return study


def study_to_yaml(study: StudyConfig) -> str:
    return yaml.safe_dump(study.model_dump(mode="json"), sort_keys=False)
