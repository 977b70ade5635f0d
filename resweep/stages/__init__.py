"""Stages: artifacts a sweep shares (ECO's teacher and centroids, an MAE encoder, an RCL
backbone), made once per study and read by every trial that needs them.

Contract of this layer:

* A stage is a ``StageDefinition`` (pydantic, strict, round-trips to YAML; field ``kind``;
  each kind subclasses it) plus a producer registered with
  ``@register_stage(kind, DefinitionClass)``:
  ``produce(definition, out_dir: Path, context: StageContext) -> dict[str, float]`` writes the
  artifact's files into ``out_dir`` (a fresh local scratch folder) and returns the artifact's
  own metrics. Producers are Ray-free. ``StageContext`` gives ``log``, ``device`` and
  ``artifact_dir(role)`` for the stages a definition depends on (``dependencies()``).
* The key of an artifact (``stage_key``) is a content hash of its definition, the kind's
  ``code_version``, the identity of the data and files it names (``identity()``), and the keys
  of its dependencies. A changed definition is a new key; an unchanged one is reused. Keys
  are computed once, on the driver, and saved with the study (:mod:`resweep.stages.study_keys`);
  trials are given them and never compute one.
* Seeds: a kind with a ``seed`` field accepts ``seed: trial`` (one artifact per trial seed);
  ``ExperimentConfig.stages()`` replaces it with the run's ``train.seed``, so the seed is in
  the key. An unresolved ``trial`` has no key (an error). A fixed seed is one artifact for all.
* Built-in kinds: ``train`` (a full ExperimentConfig trained by the engine -> ``weights.pt``
  + ``metrics.json``) and ``eco_centroids``. A new kind is one module plus one line in
  ``BUILTIN_STAGES`` (:mod:`resweep.name_tables`).
* Who declares stages: a method through ``MethodConfig.stages(experiment)`` (role ->
  definition), a model through ``model.init_from: {kind: ..., ...}``. At run time a method
  reads ``MethodContext.artifact_dir(role)``.
* Who makes them: a study's driver (``prepare_stages`` in :mod:`resweep.stages.on_ray`, one
  Ray task per artifact, before the Tuner starts), a trial for a stage an Optuna-sampled knob
  changed (``trial_artifact_keys``, on the trial's device; recorded by the driver from its
  commit marker, :mod:`resweep.study.in_trial_artifacts`) or, outside a study, the ``Trainer``
  itself (``prepare_local``, e.g. ``resweep train``), both into the same store:
  ``<storage>/artifacts/<key>/`` (:mod:`resweep.stages.store`: local path or ``s3://``,
  written atomically, committed by a marker, file-locked on local disks).
"""

from resweep.stages.base import (
    BUILTIN_STAGES,
    STAGES,
    StageContext,
    StageDefinition,
    parse_stage,
    register_stage,
    stage_key,
    stage_kind,
)
from resweep.stages.produce import (
    FAILED,
    PRODUCED,
    REUSED,
    ArtifactRecord,
    PlannedStage,
    artifact_uris,
    fetch_artifacts,
    plan,
    prepare_local,
    produce,
)
from resweep.stages.store import ArtifactStore

__all__ = [
    "BUILTIN_STAGES",
    "FAILED",
    "PRODUCED",
    "REUSED",
    "STAGES",
    "ArtifactRecord",
    "ArtifactStore",
    "PlannedStage",
    "StageContext",
    "StageDefinition",
    "artifact_uris",
    "fetch_artifacts",
    "parse_stage",
    "plan",
    "prepare_local",
    "produce",
    "register_stage",
    "stage_key",
    "stage_kind",
]
