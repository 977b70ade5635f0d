"""Typed search spaces over dotted config paths.

A space maps a config path (``optim.lr``, ``methods.spn.weight``) to a distribution. A
distribution may carry ``when: {path: value}``: the knob only exists when the earlier knobs
(or the base config) have those values, e.g. SPN's λ only when SPN is enabled.

Grid and random studies are expanded here into an explicit list of trials (so the trial set
is exact, reproducible and resumable); Optuna studies use a define-by-run function.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resweep.errors import ConfigError


class _Distribution(BaseModel):
    model_config = ConfigDict(extra="forbid")
    when: dict[str, Any] | None = Field(
        None, description="only sample this knob when these paths have these values"
    )


class _Values(_Distribution):
    """A finite list of values (shared by ``grid`` and ``choice``)."""

    values: list[Any]

    @model_validator(mode="after")
    def _non_empty(self) -> _Values:
        if not self.values:
            raise ValueError(f"a {self.type} needs at least one value")  # type: ignore[attr-defined]
        return self


class Grid(_Values):
    """Every value is tried (grid and random studies)."""

    type: Literal["grid"] = "grid"


class Choice(_Values):
    """One value is drawn per trial (random and Optuna studies)."""

    type: Literal["choice"] = "choice"


class Uniform(_Distribution):
    type: Literal["uniform"] = "uniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> Uniform:
        if not (math.isfinite(self.low) and math.isfinite(self.high)) or self.low >= self.high:
            raise ValueError(f"needs finite low < high, got low={self.low}, high={self.high}")
        return self


class LogUniform(_Distribution):
    type: Literal["loguniform"] = "loguniform"
    low: float
    high: float

    @model_validator(mode="after")
    def _bounds(self) -> LogUniform:
        if not (0 < self.low < self.high) or not math.isfinite(self.high):
            raise ValueError(f"needs 0 < low < high, got low={self.low}, high={self.high}")
        return self


class IntRange(_Distribution):
    type: Literal["int"] = "int"
    low: int
    high: int  # inclusive, as Optuna's suggest_int
    step: int = 1
    log: bool = False

    @model_validator(mode="after")
    def _bounds(self) -> IntRange:
        if self.low > self.high:
            raise ValueError(f"needs low <= high, got low={self.low}, high={self.high}")
        if self.step < 1:
            raise ValueError(f"step must be >= 1, got {self.step}")
        if self.log and (self.low < 1 or self.step != 1):
            raise ValueError("log=true needs low >= 1 and step 1")
        return self


Distribution = Annotated[
    Grid | Choice | Uniform | LogUniform | IntRange, Field(discriminator="type")
]
DISTRIBUTION_TYPES = ("grid", "choice", "uniform", "loguniform", "int")

SearchSpace = dict[str, Distribution]


def condition_holds(dist: _Distribution, params: dict[str, Any], base: dict[str, Any]) -> bool:
    """Whether a conditional knob exists given the knobs drawn so far (and the base config)."""
    if not dist.when:
        return True
    from resweep.config import get_dotted

    for path, expected in dist.when.items():
        actual = params[path] if path in params else get_dotted(base, path)
        if actual != expected:
            return False
    return True


def _key(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def expand_grid(space: SearchSpace, base: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid/choice knobs, conditional knobs dropped where they do not
    exist, duplicates removed, in a stable order."""
    for path, dist in space.items():
        if not isinstance(dist, _Values):
            raise ConfigError(
                f"grid search needs 'grid' or 'choice' values, got '{dist.type}'", field=f"space.{path}"
            )
    paths = list(space)
    combos: list[dict[str, Any]] = []
    seen: set[str] = set()
    for values in itertools.product(*(space[p].values for p in paths)):  # type: ignore[union-attr]
        params: dict[str, Any] = {}
        for path, value in zip(paths, values, strict=True):
            if condition_holds(space[path], params, base):
                params[path] = value
        key = _key(params)
        if key not in seen:
            seen.add(key)
            combos.append(params)
    return combos


def _sample_one(dist: _Distribution, rng: random.Random) -> Any:
    if isinstance(dist, _Values):
        return rng.choice(dist.values)
    if isinstance(dist, Uniform):
        return rng.uniform(dist.low, dist.high)
    if isinstance(dist, LogUniform):
        return math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))
    if isinstance(dist, IntRange):
        if dist.log:
            return int(round(math.exp(rng.uniform(math.log(dist.low), math.log(dist.high)))))
        return rng.randrange(dist.low, dist.high + 1, dist.step)
    raise TypeError(f"unknown distribution {dist!r}")


def sample_random(space: SearchSpace, n: int, seed: int, base: dict[str, Any]) -> list[dict[str, Any]]:
    """``n`` configurations drawn independently (conditional knobs respected), reproducible by seed."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        params: dict[str, Any] = {}
        for path, dist in space.items():
            if condition_holds(dist, params, base):
                params[path] = _sample_one(dist, rng)
        out.append(params)
    return out


class OptunaDefineByRun:
    """A define-by-run space for Optuna (conditional knobs become conditional suggestions).

    A class rather than a closure: Ray Tune pickles the searcher into its experiment state.
    """

    def __init__(self, space: SearchSpace, base: dict[str, Any]):
        self.space = space
        self.base = base

    def __call__(self, trial: Any) -> None:
        params: dict[str, Any] = {}
        for path, dist in self.space.items():
            if not condition_holds(dist, params, self.base):
                continue
            if isinstance(dist, _Values):
                # Optuna's categorical needs hashable primitives: encode others as JSON.
                choices = [_encode_choice(v) for v in dist.values]
                value = _decode_choice(trial.suggest_categorical(path, choices))
            elif isinstance(dist, Uniform):
                value = trial.suggest_float(path, dist.low, dist.high)
            elif isinstance(dist, LogUniform):
                value = trial.suggest_float(path, dist.low, dist.high, log=True)
            else:
                assert isinstance(dist, IntRange)
                value = trial.suggest_int(path, dist.low, dist.high, step=dist.step, log=dist.log)
            params[path] = value


def optuna_define_by_run(space: SearchSpace, base: dict[str, Any]) -> Callable[[Any], None]:
    return OptunaDefineByRun(space, base)


_JSON_PREFIX = "json:"


def _encode_choice(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return _JSON_PREFIX + json.dumps(value)


def _decode_choice(value: Any) -> Any:
    if isinstance(value, str) and value.startswith(_JSON_PREFIX):
        return json.loads(value[len(_JSON_PREFIX) :])
    return value


def decode_params(params: dict[str, Any]) -> dict[str, Any]:
    """Undo the JSON encoding of non-primitive categorical values in an Optuna-drawn config."""
    return {k: _decode_choice(v) for k, v in params.items()}


def probe_values(dist: _Distribution) -> list[Any]:
    """Values that exercise a distribution's extremes, used to validate a space before running."""
    if isinstance(dist, _Values):
        return list(dist.values)
    if isinstance(dist, Uniform | LogUniform):
        return [dist.low, dist.high]
    assert isinstance(dist, IntRange)
    return [dist.low, dist.high]


__all__ = [
    "Choice",
    "DISTRIBUTION_TYPES",
    "Distribution",
    "Grid",
    "IntRange",
    "LogUniform",
    "SearchSpace",
    "Uniform",
    "condition_holds",
    "decode_params",
    "expand_grid",
    "optuna_define_by_run",
    "probe_values",
    "sample_random",
]
