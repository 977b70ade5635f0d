"""The built-in ``train`` kind: a full training run of the engine, kept as its weights.

Artifact files: ``weights.pt`` (the model's state dict: the EMA weights when the run had an
EMA, as evaluation used them), ``metrics.json`` (final status, iteration and evaluation
metrics), ``config.yaml`` (the experiment that was trained) and ``diagnostics/<name>.json``:
what the run's methods report about the network before the first and after the last step
(:mod:`resweep.methods.diagnostics`; e.g. RCL's Fig. 2 gaps), merged by name, each with the
share of its samples above its reference among the artifact's metrics. ECO's teacher, RCL
pretraining and SL(Den) pretraining are ``train`` stages.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, field_validator

from resweep.file_names import CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE
from resweep.stages.base import StageContext, StageDefinition, register_stage

if TYPE_CHECKING:
    from resweep.methods.diagnostics import Diagnostic

DIAGNOSTICS_DIR = "diagnostics"

# Keys that do not change the trained weights: renaming or re-logging a run reuses its artifact.
_NON_WEIGHT_KEYS = ("name", "eval", "train.log_every", "train.checkpoint_every", "train.checkpoints_to_keep")


class TrainStage(StageDefinition):
    """``kind: train``: ``experiment`` is a full experiment config (validated as one).

    ``seed``: ``trial`` trains one artifact per trial seed (the run's ``train.seed``); an
    integer replaces the experiment's ``train.seed``; none keeps the experiment's own (fixed).
    """

    kind: Literal["train"] = "train"
    experiment: dict[str, Any]
    seed: int | Literal["trial"] | None = Field(
        None, description="trial: one artifact per trial seed; an integer: that fixed seed; "
        "default: the experiment's train.seed (fixed)"
    )

    @field_validator("experiment")
    @classmethod
    def _check_experiment(cls, value: dict[str, Any]) -> dict[str, Any]:
        from resweep.config import ExperimentConfig
        from resweep.errors import ConfigError

        try:
            return ExperimentConfig.from_dict(value, source="train stage").to_dict()
        except ConfigError as exc:
            raise ValueError(exc.message) from None

    def config(self) -> Any:
        from resweep.config import ExperimentConfig

        return ExperimentConfig.from_dict(self._seeded_experiment(), source="train stage")

    def _seeded_experiment(self) -> dict[str, Any]:
        """The experiment with this stage's fixed seed in ``train.seed`` (as trained)."""
        if not isinstance(self.seed, int):
            return self.experiment
        data = json.loads(json.dumps(self.experiment))
        data.setdefault("train", {})["seed"] = self.seed
        return data

    def key_definition(self) -> dict[str, Any]:
        # the seed enters as the experiment's train.seed: ``seed: 1`` and ``train.seed: 1``
        # train the same weights, so they are one artifact (and keys of seedless stages stay)
        data = json.loads(json.dumps(self._seeded_experiment()))
        for dotted in _NON_WEIGHT_KEYS:
            node = data
            *parents, last = dotted.split(".")
            for part in parents:
                node = node.get(part, {})
            node.pop(last, None)
        return {"kind": self.kind, "experiment": data}

    def identity(self) -> dict[str, Any]:
        from resweep.stages.identity import dataset_identity

        return {"train_data": dataset_identity(self.config().data.train)}

    def dependencies(self) -> dict[str, StageDefinition]:
        return self.config().stages()


@register_stage("train", TrainStage)
def produce_train(definition: TrainStage, out_dir: Path, context: StageContext) -> dict[str, float]:
    import torch

    from resweep.engine.trainer import STATUS_FINISHED, Trainer, default_device
    from resweep.errors import ResweepError
    from resweep.methods.base import World

    config = definition.config()
    device = context.device or default_device(config)
    trainer = Trainer(
        config,
        world=World(device=device),
        log=lambda msg: context.log(f"[train stage '{config.name}'] {msg}"),
        artifacts=dict(context.artifacts),
    )
    start = trainer.diagnostics("start")
    outcome = trainer.fit()
    if outcome.status != STATUS_FINISHED:
        raise ResweepError(
            f"train stage '{config.name}' ended '{outcome.status}' at iteration {outcome.iteration}; "
            "fix its config"
        )
    model = trainer.ema.module if trainer.ema is not None else trainer.model
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out_dir / WEIGHTS_FILE)
    config.save(out_dir / CONFIG_FILE)
    metrics = {k: float(v) for k, v in outcome.metrics.items() if isinstance(v, int | float)}
    metrics["iteration"] = float(outcome.iteration)
    end = trainer.diagnostics("end")
    context.notes.extend(note for method in trainer.methods.values() for note in method.notes())
    metrics.update(write_diagnostics(out_dir / DIAGNOSTICS_DIR, {"start": start, "end": end}))
    (out_dir / METRICS_FILE).write_text(
        json.dumps({"status": outcome.status, "iteration": outcome.iteration, "metrics": metrics}, indent=1)
    )
    return metrics


def write_diagnostics(folder: Path, by_phase: dict[str, list[Diagnostic]]) -> dict[str, float]:
    """One ``<name>.json`` per diagnostic (the phases' groups merged); returns the share of each
    phase's samples above the reference as ``<name>.share_above_<ref>.<phase>`` metrics."""
    from resweep.methods.diagnostics import merge_diagnostics

    metrics: dict[str, float] = {}
    for phase, diagnostics in by_phase.items():
        for d in diagnostics:
            share = d.share_above()
            if share == share:  # not NaN: a reference and samples
                metrics[f"{d.name}.share_above_{d.reference:g}.{phase}"] = share
    merged = merge_diagnostics(*by_phase.values())
    if merged:
        folder.mkdir(parents=True, exist_ok=True)
    for name, diagnostic in merged.items():
        (folder / f"{name}.json").write_text(diagnostic.to_json())
    return metrics
