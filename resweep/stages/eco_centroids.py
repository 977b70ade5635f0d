"""The ``eco_centroids`` kind: ECO's teacher outputs ŷc over a training set (METHODS.md §2).

Definition: the teacher (a ``methods.eco.teacher`` mapping: a file source, or ``train``,
which becomes a ``train`` dependency made first), the task and training set whose whole
images the teacher sees, and how ŷc is stored. Files: see :mod:`resweep.methods.eco_centroids`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from resweep.stages.base import StageContext, StageDefinition, register_stage

TEACHER_ROLE = "teacher"


class EcoCentroidsStage(StageDefinition):
    kind: Literal["eco_centroids"] = "eco_centroids"
    teacher: dict[str, Any]  # a methods.eco.teacher mapping (TeacherSpec)
    task: dict[str, Any]  # a TaskConfig
    data: dict[str, Any]  # a DatasetSpec: the training set
    teacher_input: Literal["task", "clean"] = "task"
    centroid_dtype: Literal["uint8", "float16", "float32"] = "uint8"
    clean_lr: bool = False

    def teacher_spec(self) -> Any:
        from resweep.methods.eco_config import TeacherSpec

        return TeacherSpec.model_validate(self.teacher)

    def dependencies(self) -> dict[str, StageDefinition]:
        spec = self.teacher_spec()
        if spec.kind != "train":
            return {}
        from resweep.stages.train import TrainStage

        return {TEACHER_ROLE: TrainStage(experiment=spec.train)}

    def key_definition(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        spec = self.teacher_spec()
        # A teacher's file path is not its identity (its content is: see identity());
        # a trained teacher is identified by its dependency's key.
        data["teacher"] = {k: v for k, v in data["teacher"].items() if k not in ("checkpoint", "run_dir", "weights", "train")}
        data["teacher"]["source"] = spec.kind
        data["data"].pop("name", None)
        return data

    def identity(self) -> dict[str, Any]:
        from resweep.config import DatasetSpec
        from resweep.stages.identity import dataset_identity, file_sha256

        out: dict[str, Any] = {"train_data": dataset_identity(DatasetSpec.model_validate(self.data))}
        path = teacher_file(self.teacher_spec())
        if path is not None:
            out["teacher_sha256"] = file_sha256(path)
        return out


def teacher_file(spec: Any) -> Path | None:
    """The weights/checkpoint file a file-sourced teacher reads (None for a trained one)."""
    from resweep.methods.eco_teacher import latest_checkpoint

    if spec.kind == "weights":
        return Path(spec.weights)
    if spec.kind == "checkpoint":
        path = Path(spec.checkpoint)
        from resweep.engine.checkpoint import CHECKPOINT_FILE

        return path / CHECKPOINT_FILE if path.is_dir() else path
    if spec.kind == "run_dir":
        return latest_checkpoint(spec.run_dir, field="methods.eco.teacher.run_dir")
    return None


def resolve_teacher(spec: Any, scale: int, context: StageContext) -> Any:
    """The teacher of ``spec`` (checked to be a x``scale`` model)."""
    from resweep.errors import ConfigError
    from resweep.methods import eco_teacher

    base_field = "methods.eco.teacher"
    kind = spec.kind
    field = f"{base_field}.{kind}"
    if kind == "weights":
        teacher = eco_teacher.teacher_from_weights(spec.weights, spec.model, spec.model_kwargs, scale, field=field)
    elif kind == "train":
        teacher = eco_teacher.teacher_from_artifact(context.artifact_dir(TEACHER_ROLE), field=field)
    else:
        teacher = eco_teacher.teacher_from_checkpoint(teacher_file(spec), use_ema=spec.use_ema, field=field)
    if teacher.scale != scale:
        raise ConfigError(
            f"the teacher ({teacher.source}) is a x{teacher.scale} model but the task is x{scale}", field=field
        )
    return teacher


@register_stage("eco_centroids", EcoCentroidsStage)
def produce_eco_centroids(definition: EcoCentroidsStage, out_dir: Path, context: StageContext) -> dict[str, float]:
    import torch

    from resweep.config import DatasetSpec, TaskConfig
    from resweep.data import TrainPatchDataset, build_source
    from resweep.degradations.tasks import build_task
    from resweep.methods.eco_centroids import compute_centroids

    task = build_task(TaskConfig.model_validate(definition.task))
    source = build_source(DatasetSpec.model_validate(definition.data), scale=task.scale)
    dataset = TrainPatchDataset(source, task, patch_size=8, augment=False)  # only full_pair is used
    spec = definition.teacher_spec()
    teacher = resolve_teacher(spec, task.scale, context)
    manifest = compute_centroids(
        dataset,
        teacher,
        out_dir,
        teacher_input=definition.teacher_input,
        centroid_dtype=definition.centroid_dtype,
        clean_lr=definition.clean_lr,
        tile=spec.tile,
        tile_overlap=spec.tile_overlap,
        device=context.device or torch.device("cpu"),
        log=context.log,
        progress=context.progress,
    )
    return {"images": float(manifest["computed_images"]), "teacher_forward_passes": float(manifest["teacher_forward_passes"]),
            "seconds": float(manifest["seconds"])}
