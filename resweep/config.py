"""Typed experiment configuration, validated once at the edge and round-tripped to YAML.

Every knob of a training run lives in :class:`ExperimentConfig`; its sections (task, data,
model, optim, schedule, loss, train, eval) are defined in :mod:`resweep.config_sections` and
re-exported here. Methods (SPN, ECO, ...) register their own config class;
``ExperimentConfig.methods`` maps a method name to that config, so a study can refer to
``methods.spn.weight`` as a dotted path. This module also holds dotted-path access
(``set_dotted``, ``config_path_exists``) and ``load_config``.

Contract of this module: it imports nothing above the config layer, at module level or in a
function (``tests/test_layers.py``; ``python -c "import resweep.config"`` stays light, no
torch). Names that registries hold (task kinds, pixel losses, optimisers, models, methods,
stage kinds) are plain strings checked against the tables of :mod:`resweep.name_tables` when a
config is validated: the table is the one source of truth, and a new entry needs no edit here.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    BaseModel,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from resweep.config_io import config_error as _config_error
from resweep.config_io import expand_path, get_dotted, read_yaml
from resweep.config_methods import MethodConfig
from resweep.config_sections import (
    DataConfig,
    DatasetSpec,
    DivergenceConfig,
    EvalConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    ScheduleConfig,
    StrictModel,
    TaskConfig,
    TrainConfig,
    VideoTaskConfig,
)
from resweep.config_stages import parse_stage
from resweep.errors import ConfigError, RegistryError
from resweep.name_tables import METHOD_CONFIGS, MODELS

# The sections live in config_sections, expand_path/get_dotted/read_yaml in config_io;
# importing them from here still works.
__all__ = [
    "DataConfig",
    "DatasetSpec",
    "DivergenceConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "ScheduleConfig",
    "StrictModel",
    "TaskConfig",
    "TrainConfig",
    "VideoTaskConfig",
    "config_path_exists",
    "expand_path",
    "get_dotted",
    "load_config",
    "read_yaml",
    "set_dotted",
]


class ExperimentConfig(StrictModel):
    """A full training run. ``resweep train`` takes one; a study varies its fields."""

    name: str = "run"
    task: TaskConfig = Field(default_factory=TaskConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    methods: dict[str, SerializeAsAny[MethodConfig]] = Field(
        default_factory=dict, description="method name -> its knobs (see resweep.methods)"
    )

    @field_validator("methods", mode="before")
    @classmethod
    def _parse_methods(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of method name to its settings")
        parsed: dict[str, MethodConfig] = {}
        for name, raw in value.items():
            try:
                config_class = METHOD_CONFIGS.get(name)
            except RegistryError as exc:
                raise ValueError(str(exc)) from None
            if isinstance(raw, config_class):
                parsed[name] = raw
                continue
            try:
                parsed[name] = config_class.model_validate(raw or {})
            except ValidationError as exc:
                # keep the full dotted path (methods.spn.layer_weights) in the message
                problems = "\n".join(
                    f"methods.{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                    for e in exc.errors()
                )
                raise ValueError(problems) from None
        return parsed

    @model_validator(mode="after")
    def _check_model(self) -> ExperimentConfig:
        if self.model.name not in MODELS:
            import difflib

            close = difflib.get_close_matches(self.model.name, MODELS.names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown model '{self.model.name}' (model.name).{hint} "
                f"Known: {', '.join(MODELS.names())}"
            )
        return self

    @model_validator(mode="after")
    def _check_methods_fit(self) -> ExperimentConfig:
        for name, method in sorted(self.enabled_methods.items()):
            try:
                method.check_experiment(self)
            except ValueError as exc:
                raise ValueError(f"methods.{name}: {exc}") from None
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def enabled_methods(self) -> dict[str, MethodConfig]:
        return {k: v for k, v in self.methods.items() if v.enabled}

    def stages(self) -> dict[str, Any]:
        """Every artifact this run needs made first, as ``{role: StageDefinition}``: the
        enabled methods' (``<method>.<role>``) and the model's (``model.init_from``).

        A stage with ``seed: trial`` gets this run's ``train.seed`` (in a study: the trial's
        seed), so each seed of a study reads its own artifact."""
        out: dict[str, Any] = {}
        for name, method in sorted(self.enabled_methods.items()):
            for role, definition in method.stages(self).items():
                out[f"{name}.{role}"] = definition
        if isinstance(self.model.init_from, dict):
            out["model.init_from"] = parse_stage(self.model.init_from, field="model.init_from")
        return {role: definition.with_trial_seed(self.train.seed) for role, definition in out.items()}

    @property
    def scale(self) -> int:
        return self.task.scale

    @property
    def crop_border(self) -> int:
        if self.eval.crop_border is not None:
            return self.eval.crop_border
        return self.task.scale if self.task.scale > 1 else 0

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_yaml())
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "<dict>") -> ExperimentConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise _config_error(exc, source) from None

    def with_overrides(self, overrides: dict[str, Any], source: str = "<overrides>") -> ExperimentConfig:
        """A copy with dotted-path values set (``{"optim.lr": 1e-3, "methods.spn.weight": 1e-4}``).

        Unknown paths are errors, except below ``methods.<name>`` where the method's own
        config class decides (so a study can switch a method on that the base config lacks).
        """
        data = copy.deepcopy(self.to_dict())
        for path, value in overrides.items():
            set_dotted(data, path, value, source=source, schema=type(self))
        return type(self).from_dict(data, source=source)


# --------------------------------------------------------------------------- dotted paths
def _walk_schema(schema: type[BaseModel], parts: list[str]) -> bool:
    """True if ``parts`` names a field of ``schema`` (descending into sub-models)."""
    current: Any = schema
    for i, part in enumerate(parts):
        if current is None:
            return False
        if isinstance(current, type) and issubclass(current, BaseModel):
            if part not in current.model_fields:
                return False
            if current is ExperimentConfig and part == "methods":
                return _check_method_path(parts[i + 1 :])
            annotation = current.model_fields[part].annotation
            current = _submodel(annotation)
            if current is None:
                # a leaf (or a free-form dict such as model.kwargs): deeper parts allowed only for dicts
                return i == len(parts) - 1 or _is_dict(annotation)
        else:
            return False
    return True


def _check_method_path(parts: list[str]) -> bool:
    if not parts:
        return True
    if parts[0] not in METHOD_CONFIGS:
        return False
    if len(parts) == 1:
        return True
    return _walk_schema(METHOD_CONFIGS.get(parts[0]), parts[1:])


def _submodel(annotation: Any) -> type[BaseModel] | None:
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def _is_dict(annotation: Any) -> bool:
    import typing

    return annotation is dict or typing.get_origin(annotation) is dict


def config_path_exists(path: str, schema: type[BaseModel] | None = None) -> bool:
    """Whether a dotted path names a knob of the experiment config."""
    return _walk_schema(schema or ExperimentConfig, path.split("."))


def set_dotted(
    data: dict[str, Any],
    path: str,
    value: Any,
    *,
    source: str = "<overrides>",
    schema: type[BaseModel] | None = ExperimentConfig,
) -> None:
    if schema is not None and not config_path_exists(path, schema):
        raise ConfigError(f"unknown config path '{path}'", source=source, field=path)
    parts = path.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = {}
            node[part] = nxt
        if not isinstance(nxt, dict):
            raise ConfigError(f"'{part}' is not a section", source=source, field=path)
        node = nxt
    node[parts[-1]] = value


# --------------------------------------------------------------------------- loading
def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment config; relative data paths resolve against the file."""
    path = Path(path)
    data = read_yaml(path)
    return ExperimentConfig.from_dict(data, source=str(path))

