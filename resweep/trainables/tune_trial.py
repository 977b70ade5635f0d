"""The Ray Tune trial function: one trial = one training run of the engine.

With one worker and ``in_process`` the trial process trains itself (no nested worker group);
otherwise it builds and fits a ``TorchTrainer`` (the Train V2 + Tune pattern) whose workers'
reports reach Tune through ``TuneReportCallback``. Either way this module knows nothing of
any loss or method: it turns a Tune config into an ``ExperimentConfig`` and runs it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from resweep.config import ExperimentConfig
from resweep.search_spaces import decode_params

#: keys of a Tune trial config that are not config paths
TRIAL_KEY = "trial"
REPEAT_INDEX_KEY = "__trial_index__"


def trial_params(config: dict[str, Any], seeds: list[int]) -> tuple[str, dict[str, Any], int]:
    """(label, dotted overrides, seed) of a Tune trial config (grid/random or Optuna + Repeater)."""
    if TRIAL_KEY in config:
        spec = config[TRIAL_KEY]
        return spec.get("label", ""), dict(spec["params"]), int(spec["seed"])
    index = int(config.get(REPEAT_INDEX_KEY, 0))
    params = {k: v for k, v in config.items() if k != REPEAT_INDEX_KEY}
    return "", decode_params(params), seeds[index % len(seeds)]


def study_trial(config: dict[str, Any], *, base: dict[str, Any], settings: dict[str, Any]) -> None:
    """Tune function trainable. ``base``: the base experiment config; ``settings``: seeds,
    resources and storage of the study (passed with ``tune.with_parameters``)."""
    from ray import tune

    label, params, seed = trial_params(config, settings["seeds"])
    experiment = ExperimentConfig.from_dict(base, source="<study base>").with_overrides(
        {**params, "train.seed": seed}, source="<trial>"
    )
    trial_id = tune.get_context().get_trial_id()
    settings = {**settings, "started_at": time.time()}
    cache_dir = settings.get("cache_dir")
    if settings["workers"] == 1 and settings["in_process"]:
        _train_in_process(experiment, cache_dir, settings, _trial_scratch(trial_id))
    else:
        _train_with_torch_trainer(experiment, trial_id, cache_dir, settings)


def _trial_scratch(trial_id: str) -> Path:
    """This trial's own local folder for fetched artifacts (on whichever node it runs)."""
    from resweep.stages.store import scratch_root

    path = scratch_root() / trial_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def _artifact_keys(experiment: ExperimentConfig, settings: dict[str, Any], scratch: Path) -> dict[str, str]:
    """role -> key of the artifacts this trial reads (made by the driver; see resweep.stages)."""
    from resweep.stages.produce import trial_artifact_keys

    return trial_artifact_keys(
        experiment, settings["storage"], settings.get("artifacts") or {}, scratch, log=_trial_logger()
    )


def _train_in_process(
    experiment: ExperimentConfig, cache_dir: str | None, settings: dict[str, Any], scratch: Path
) -> None:
    import torch
    from ray import tune

    from resweep.engine.trainer import Trainer
    from resweep.methods import World
    from resweep.trainables.worker import TuneReporter, load_resume_state

    # Ray sets CUDA_VISIBLE_DEVICES for the trial's GPU share, so the first visible device is ours.
    use_gpu = settings["gpus_per_worker"] > 0 and torch.cuda.is_available()
    device = torch.device("cuda", 0) if use_gpu else torch.device("cpu")
    if not use_gpu:
        torch.set_num_threads(max(1, int(settings["cpus_per_worker"])))
    from resweep.stages.produce import artifact_uris, fetch_artifacts

    keys = _artifact_keys(experiment, settings, scratch)
    artifacts = fetch_artifacts(artifact_uris(settings["storage"], keys), scratch)
    trainer = Trainer(
        experiment,
        world=World(rank=0, world_size=1, device=device),
        reporter=TuneReporter(),
        resume_state=load_resume_state(tune.get_checkpoint()),
        cache_dir=Path(cache_dir) if cache_dir else None,
        log=_trial_logger(),
        started_at=settings.get("started_at") or time.time(),
        image_dir=_image_dir(settings),
        artifacts=artifacts,
    )
    trainer.fit()


def _train_with_torch_trainer(
    experiment: ExperimentConfig, trial_id: str, cache_dir: str | None, settings: dict[str, Any]
) -> None:
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from resweep.stages.produce import artifact_uris
    from resweep.trainables.worker import train_loop_per_worker

    keys = _artifact_keys(experiment, settings, _trial_scratch(trial_id))
    use_gpu = settings["gpus_per_worker"] > 0
    resources = {"CPU": settings["cpus_per_worker"]}
    if use_gpu:
        resources["GPU"] = settings["gpus_per_worker"]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "experiment": experiment.to_dict(),
            "cache_dir": cache_dir,
            "artifacts": artifact_uris(settings["storage"], keys),  # role -> URI; workers fetch
            "started_at": settings.get("started_at"),
            "image_dir": str(_image_dir(settings)) if _image_dir(settings) else None,
        },
        scaling_config=ScalingConfig(
            num_workers=settings["workers"], use_gpu=use_gpu, resources_per_worker=resources
        ),
        run_config=RunConfig(
            # same name on a restarted trial: Train V2 restores its latest checkpoint
            name=f"train-{trial_id}",
            storage_path=settings["train_storage"],
            failure_config=FailureConfig(max_failures=settings["max_failures"]),
            logging_config=LoggingConfig(log_level="WARNING"),
            checkpoint_config=CheckpointConfig(num_to_keep=experiment.train.checkpoints_to_keep),
            callbacks=[TuneReportCallback()],
        ),
    )
    result = trainer.fit()
    if result.error:
        raise result.error


def _image_dir(settings: dict[str, Any]) -> Path | None:
    """<study>/images/<trial_id>: on a cluster the study folder must be shared storage for these."""
    from ray import tune

    root = settings.get("image_root")
    return Path(root) / tune.get_context().get_trial_id() if root else None


def _trial_logger():
    import logging

    logger = logging.getLogger("resweep.trial")
    return logger.info
