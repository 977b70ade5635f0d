"""Typed experiment configuration, validated once at the edge and round-tripped to YAML.

Every knob of a training run lives here. Methods (SPN, ECO, ...) register their own config
class; ``ExperimentConfig.methods`` maps a method name to that config, so a study can refer
to ``methods.spn.weight`` as a dotted path.
"""

from __future__ import annotations

import copy
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from resweep.errors import ConfigError, RegistryError
from resweep.methods.base import MethodConfig


class StrictModel(BaseModel):
    """Unknown keys are errors: a misspelt knob must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------- task
TaskKind = Literal["sr", "denoise", "hetero_denoise", "denoise_sr", "realworld_sr", "video_denoise"]


class VideoTaskConfig(StrictModel):
    """Video tasks only (``video_denoise``): the temporal window the network sees."""

    num_frames: int = Field(5, ge=1, description="T: noisy frames per network input (odd)")
    target: Literal["centre", "all"] = Field(
        "centre", description="restore the window's centre frame, or all of its frames"
    )
    noise_sigma_range: tuple[float, float] | None = Field(
        None, description="draw sigma (8-bit scale) uniformly per clip from this range instead of noise_sigma"
    )

    @model_validator(mode="after")
    def _check(self) -> VideoTaskConfig:
        if self.num_frames % 2 == 0:
            raise ValueError(f"num_frames must be odd (a centre frame), got {self.num_frames}")
        if self.noise_sigma_range is not None:
            lo, hi = self.noise_sigma_range
            if not 0 <= lo <= hi:
                raise ValueError(f"noise_sigma_range must satisfy 0 <= low <= high, got {(lo, hi)}")
        return self


class TaskConfig(StrictModel):
    """The degradation that turns a clean image into the network input."""

    kind: TaskKind = "sr"
    scale: int = Field(2, description="SR factor; must be 1 for pure denoising tasks")
    noise_sigma: float = Field(
        25.0, ge=0, description="Gaussian noise std on the 8-bit scale (denoise, denoise_sr, realworld_sr)"
    )
    shot_noise_range: tuple[float, float] = Field(
        (0.0, 0.003), description="lambda_shot range of heteroscedastic noise, variance = shot*y + read"
    )
    read_noise_range: tuple[float, float] = Field((0.0, 0.003))
    quantize_input: bool = Field(True, description="round the degraded input to 8 bits, as saved LR files are")
    video: VideoTaskConfig = Field(default_factory=VideoTaskConfig)

    @model_validator(mode="after")
    def _check_scale(self) -> TaskConfig:
        if self.kind in ("denoise", "hetero_denoise", "video_denoise") and self.scale != 1:
            raise ValueError(f"task kind '{self.kind}' needs scale 1, got {self.scale}")
        if self.kind in ("sr", "denoise_sr", "realworld_sr") and self.scale not in (2, 3, 4, 8):
            raise ValueError(f"task kind '{self.kind}' needs scale in 2, 3, 4, 8, got {self.scale}")
        for name in ("shot_noise_range", "read_noise_range"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(lo, hi)}")
        return self


# --------------------------------------------------------------------------- data
def expand_path(value: Any) -> Any:
    """``~`` and ``$VAR`` in paths (presets say ``$RESWEEP_DATA/CBSD432``); unset variables are errors."""
    if value is None or not isinstance(value, str | Path):
        return value
    text = os.path.expanduser(os.path.expandvars(str(value)))
    if "$" in text:
        missing = re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", text)
        raise ValueError(
            f"environment variable {', '.join(missing)} is not set (path '{value}'); "
            "set it to the folder that holds the datasets"
        )
    return text


class DatasetSpec(StrictModel):
    """One image source: a folder of clean images, paired LQ/GT folders, the demo set or a patch store."""

    kind: Literal["folder", "paired", "demo", "patch_store", "video_folder", "video_demo"] = "demo"
    path: Path | None = Field(
        None, description="folder of clean images, the patch store file, or (video_folder) a "
        "folder of clip folders of frames 0000.png, 0001.png... or one such clip folder"
    )
    lq_path: Path | None = None
    gt_path: Path | None = None
    name: str | None = Field(None, description="name in metrics and tables (default: folder name)")
    max_images: int | None = Field(None, ge=1, description="use only the first N images (sorted)")
    split: Literal["train", "eval", "all"] = Field(
        "all", description="demo only: which of its photographs to use"
    )
    max_frames: int | None = Field(
        None, ge=1, description="video evaluation only: use only the first N frames of each clip"
    )

    @field_validator("path", "lq_path", "gt_path", mode="before")
    @classmethod
    def _expand(cls, value: Any) -> Any:
        return expand_path(value)

    @model_validator(mode="after")
    def _check_paths(self) -> DatasetSpec:
        if self.kind in ("folder", "patch_store", "video_folder") and self.path is None:
            raise ValueError(f"dataset kind '{self.kind}' needs 'path'")
        if self.kind == "paired" and (self.lq_path is None or self.gt_path is None):
            raise ValueError("dataset kind 'paired' needs both 'lq_path' and 'gt_path'")
        return self

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.kind in ("demo", "video_demo"):
            stem = "demo" if self.kind == "demo" else "video-demo"
            return stem if self.split == "all" else f"{stem}-{self.split}"
        path = self.gt_path if self.kind == "paired" else self.path
        assert path is not None
        return Path(path).stem if self.kind == "patch_store" else Path(path).name


class DataConfig(StrictModel):
    train: DatasetSpec = Field(default_factory=lambda: DatasetSpec(kind="demo", split="train"))
    patch_size: int = Field(48, ge=4, description="input (LQ) patch side; the GT patch is patch_size*scale")
    batch_size: int = Field(16, ge=1, description="total over all workers; must divide by the worker count")
    augment: bool = Field(True, description="random flips and 90-degree rotations")
    loader_workers: int = Field(0, ge=0, description="DataLoader processes per training worker")


# --------------------------------------------------------------------------- model / optimisation
class ModelConfig(StrictModel):
    name: str = "edsr_baseline"
    kwargs: dict[str, Any] = Field(default_factory=dict, description="size overrides, e.g. n_feats")
    init_from: Path | None = Field(
        None, description="initialise weights from a resweep checkpoint or a weights file"
    )


class OptimConfig(StrictModel):
    name: Literal["adam", "adamw", "lamb", "sgd"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    momentum: float = Field(0.9, ge=0, description="sgd only")
    grad_clip: float | None = Field(None, gt=0, description="max global grad norm")


class ScheduleConfig(StrictModel):
    kind: Literal["constant", "step", "cosine"] = "cosine"
    milestones: list[int] = Field(default_factory=list, description="step schedule: iterations")
    gamma: float = Field(0.5, gt=0, le=1)
    warmup_iterations: int = Field(0, ge=0)
    min_lr: float = Field(1e-7, ge=0, description="cosine floor")


class LossConfig(StrictModel):
    pixel: Literal["l1", "l2", "charbonnier"] = "l1"
    pixel_weight: float = Field(1.0, ge=0)


class DivergenceConfig(StrictModel):
    """When a run counts as collapsed. Collapse is a result (status 'diverged'), not a crash."""

    max_abs_loss: float = Field(1e3, gt=0, description="|loss| above this is a collapse")


class TrainConfig(StrictModel):
    iterations: int = Field(1000, ge=1)
    log_every: int = Field(50, ge=1, description="report training loss every N iterations")
    checkpoint_every: int | None = Field(
        None, ge=1, description="default: at every evaluation"
    )
    checkpoints_to_keep: int = Field(2, ge=1)
    seed: int = 0
    ema_decay: float | None = Field(
        None, gt=0, lt=1, description="EMA of weights used for evaluation (e.g. 0.999)"
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: bool = Field(True, description="bf16/fp16 autocast on CUDA; ignored on CPU")
    channels_last: bool = Field(True, description="channels-last memory format on CUDA")
    divergence: DivergenceConfig = Field(default_factory=DivergenceConfig)


class EvalConfig(StrictModel):
    every: int = Field(200, ge=1, description="evaluate every N iterations (and at the end)")
    sets: list[DatasetSpec] = Field(
        default_factory=lambda: [DatasetSpec(kind="demo", split="eval")]
    )
    crop_border: int | None = Field(None, ge=0, description="default: the SR scale, 0 for denoising")
    max_side: int | None = Field(
        None, ge=8, description="centre-crop evaluation images to this side (quick CPU runs)"
    )
    seed: int = Field(1234, description="seed of the fixed evaluation degradation (noise)")
    save_images: bool = Field(
        False, description="save outputs of the final evaluation as PNG (for visual comparisons)"
    )


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
        from resweep.methods import METHODS  # late import: methods import torch

        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must be a mapping of method name to its settings")
        parsed: dict[str, MethodConfig] = {}
        for name, raw in value.items():
            try:
                method_cls = METHODS.get(name)
            except RegistryError as exc:
                raise ValueError(str(exc)) from None
            if isinstance(raw, method_cls.config_class):
                parsed[name] = raw
                continue
            try:
                parsed[name] = method_cls.config_class.model_validate(raw or {})
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
        from resweep.models import list_models

        if self.model.name not in list_models():
            import difflib

            close = difflib.get_close_matches(self.model.name, list_models(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"unknown model '{self.model.name}' (model.name).{hint} "
                f"Known: {', '.join(list_models())}"
            )
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def enabled_methods(self) -> dict[str, MethodConfig]:
        return {k: v for k, v in self.methods.items() if v.enabled}

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
    from resweep.methods import METHODS

    if not parts:
        return True
    if parts[0] not in METHODS:
        return False
    if len(parts) == 1:
        return True
    return _walk_schema(METHODS.get(parts[0]).config_class, parts[1:])


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


def get_dotted(data: dict[str, Any], path: str, default: Any = None) -> Any:
    node: Any = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


# --------------------------------------------------------------------------- loading
def _config_error(exc: ValidationError, source: str) -> ConfigError:
    lines = []
    first_field = None
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        msg = err["msg"].removeprefix("Value error, ")
        if loc == "methods" and msg.startswith("methods."):
            # a method's own config error carries its full path (see _parse_methods)
            for item in msg.split("\n"):
                path, _, text = item.partition(": ")
                first_field = first_field or path
                lines.append(f"  {path}: {text}")
            continue
        first_field = first_field or loc
        got = err.get("input")
        got_text = "" if isinstance(got, dict) or got is None else f" (got {got!r})"
        lines.append(f"  {loc or '<root>'}: {msg}{got_text}")
    return ConfigError("invalid configuration:\n" + "\n".join(lines), source=source, field=first_field)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with errors that name the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"file not found: {path}", source=str(path))
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"malformed YAML{where}: {problem}", source=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"expected a mapping at the top level, got {type(data).__name__}", source=str(path)
        )
    return data


def load_config(path: str | Path) -> ExperimentConfig:
    """Load and validate an experiment config; relative data paths resolve against the file."""
    path = Path(path)
    data = read_yaml(path)
    return ExperimentConfig.from_dict(data, source=str(path))

