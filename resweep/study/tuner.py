"""Building the Ray Tune ``Tuner`` of a study: the same trainable, searcher and scheduler for
``run`` and for ``resume`` (which must rebuild what Tune cannot pickle the same way)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from resweep.study.layout import TRAIN_RUNS_DIR, StudyLayout
from resweep.study.spec import StudyConfig
from resweep.study.trial_spec import TRIAL_KEY, TrialSettings, TrialSpec
from resweep.trainables.tune_trial import study_trial

logger = logging.getLogger("resweep.study")

#: what the process of a multi-worker trial asks for beside its TorchTrainer's workers
TRIAL_PROCESS_CPU = 0.01


@dataclass
class StudyResolver:
    """Optuna's draws -> a resolved :class:`TrialSpec` (picklable: Tune saves the searcher)."""

    study: StudyConfig

    def __call__(self, params: dict[str, Any], seed: int, group: str) -> TrialSpec:
        return self.study.trial_spec(params, seed, group=group)


def trial_settings(
    study: StudyConfig, layout: StudyLayout, storage: str, artifact_keys: dict[str, str] | None = None
) -> TrialSettings:
    r = study.resources
    return TrialSettings(
        workers=r.workers,
        in_process=r.in_process,
        cpus_per_worker=r.cpus_per_worker,
        gpus_per_worker=r.gpus_per_worker,
        max_failures=study.failure.max_failures,
        train_storage=storage.rstrip("/") + "/" + TRAIN_RUNS_DIR,
        cache_dir=str(layout.cache),
        image_root=str(layout.images),
        study_dir=str(layout.root),
        storage=storage,
        artifact_keys=dict(artifact_keys or {}),
    )


def trainable(
    study: StudyConfig, layout: StudyLayout, storage: str, artifact_keys: dict[str, str] | None = None
) -> Any:
    from ray import tune

    settings = trial_settings(study, layout, storage, artifact_keys)
    fn = tune.with_parameters(study_trial, settings=settings)
    if settings.uses_torch_trainer:
        # the trial process only drives a TorchTrainer, whose workers hold the resources;
        # Ray needs a non-empty bundle, so the driver asks for a sliver of a CPU
        resources = {"CPU": TRIAL_PROCESS_CPU}
    else:
        resources = {"CPU": study.resources.cpus_per_worker, "GPU": study.resources.gpus_per_worker}
    return tune.with_resources(fn, resources)


def total_trials(study: StudyConfig) -> int:
    """Trials the study runs. Optuna: whole seed groups only (a cut group would never be told)."""
    if not study.is_optuna:
        return len(study.trial_configs())
    seeds = len(study.seeds)
    total = study.search.num_samples * seeds
    if study.budget.max_trials:
        total = min(total, study.budget.max_trials // seeds * seeds)
    return max(total, seeds)


def searcher_and_space(study: StudyConfig, layout: StudyLayout) -> tuple[Any, dict | None, int]:
    """(search_alg, param_space, num_samples)."""
    from ray import tune

    if not study.is_optuna:
        specs = [spec.to_payload() for spec in study.trial_specs()]
        return None, {TRIAL_KEY: tune.grid_search(specs)}, 1

    import optuna

    from resweep.search_spaces import optuna_define_by_run
    from resweep.study.optuna_search import DivergenceAwareOptunaSearch
    from resweep.study.seed_groups import SeedGroupSearcher

    storage = None
    if study.search.optuna_storage:
        url = study.search.optuna_storage
        if url == "sqlite":
            url = f"sqlite:///{layout.optuna_db.resolve()}"
        storage = optuna.storages.RDBStorage(url)
    metrics = [o.metric for o in study.objectives]
    modes = [o.mode for o in study.objectives]
    multi = study.search.algorithm == "optuna_multi"
    sampler = (
        optuna.samplers.NSGAIISampler(seed=study.search.seed)
        if multi
        else optuna.samplers.TPESampler(
            seed=study.search.seed, n_startup_trials=min(10, study.search.num_samples // 2 or 1)
        )
    )
    optuna_search = DivergenceAwareOptunaSearch(
        space=optuna_define_by_run(study.space, study.base.to_dict()),
        metric=metrics if multi else metrics[0],
        mode=modes if multi else modes[0],
        sampler=sampler,
        study_name=study.name,
        storage=storage,
    )
    searcher = SeedGroupSearcher(
        optuna_search,
        seeds=list(study.seeds),
        objectives=metrics if multi else metrics[:1],
        resolve=StudyResolver(study),
    )
    return searcher, None, total_trials(study)


def scheduler(study: StudyConfig) -> Any:
    from resweep.study.schedulers import ObjectiveOptionalASHA, ObjectiveOptionalHyperBand

    s = study.scheduler
    max_t = study.base.train.iterations
    grace = s.grace_period or max(1, study.base.eval.every)
    objective = study.primary
    if s.kind == "asha":
        return ObjectiveOptionalASHA(
            time_attr="iteration", metric=objective.metric, mode=objective.mode,
            max_t=max_t, grace_period=min(grace, max_t), reduction_factor=s.reduction_factor,
        )
    if s.kind == "hyperband":
        return ObjectiveOptionalHyperBand(
            time_attr="iteration", metric=objective.metric, mode=objective.mode,
            max_t=max_t, reduction_factor=s.reduction_factor,
        )
    return None


def check_trial_fits(study: StudyConfig, *, fixed: bool) -> None:
    """Refuse resources no trial could ever get, before the first trial waits for them forever.

    A trial needs each of its workers' bundles on one node and, with a nested TorchTrainer, a
    sliver of CPU for the trial process beside them (Ray Train's controller takes none). On a
    ``fixed`` cluster (the embedded local Ray: nothing will join it) a shortfall is an error
    naming what was asked and what exists; on a cluster that may grow (``--address``: an
    autoscaler may add nodes) it is a warning, and trials wait.
    """
    import ray

    r = study.resources
    bundle = {k: v for k, v in (("CPU", r.cpus_per_worker), ("GPU", r.gpus_per_worker)) if v}
    uses_trainer = not (r.workers == 1 and r.in_process)
    need = {k: v * r.workers for k, v in bundle.items()}
    if uses_trainer:
        need["CPU"] = need.get("CPU", 0) + TRIAL_PROCESS_CPU
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    problems = []
    if not any(all(node.get(k, 0) >= v for k, v in bundle.items()) for node in nodes):
        biggest = max(nodes, key=lambda n: (n.get("GPU", 0), n.get("CPU", 0)), default={})
        problems.append(f"no node offers one worker's {_fmt(bundle)} (the largest has "
                        f"{_fmt({k: biggest.get(k, 0) for k in ('CPU', 'GPU')})})")
    short = {k: v for k, v in need.items() if total.get(k, 0) < v - 1e-9}
    if short:
        problems.append(f"a trial needs {_fmt(need)} in all ({r.workers} worker(s) of {_fmt(bundle)}"
                        + (f" + {TRIAL_PROCESS_CPU} CPU for the trial process" if uses_trainer else "")
                        + f"), the cluster has {_fmt({k: total.get(k, 0) for k in need})}")
    if not problems:
        return
    message = "resources: " + "; ".join(problems)
    if fixed:
        from resweep.errors import ConfigError

        raise ConfigError(message + "; lower resources.workers / cpus_per_worker / gpus_per_worker",
                          field="resources")
    logger.warning("%s: trials wait until the cluster grows (an autoscaler may add nodes)", message)


def _fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in resources.items()) or "nothing"


def max_concurrent(study: StudyConfig) -> int:
    import ray

    if study.budget.max_concurrent:
        return study.budget.max_concurrent
    r = study.resources
    cpus = ray.cluster_resources().get("CPU", 1)
    per_trial = r.workers * r.cpus_per_worker
    by_cpu = max(1, int(cpus // per_trial))
    if r.gpus_per_worker > 0:
        gpus = ray.cluster_resources().get("GPU", 0)
        by_gpu = max(1, int(gpus // (r.workers * r.gpus_per_worker))) if gpus else 1
        return min(by_cpu, by_gpu)
    return by_cpu


def build_tuner(
    study: StudyConfig, layout: StudyLayout, storage: str, callbacks: list,
    artifact_keys: dict[str, str] | None = None, *,
    name: str | None = None, search: tuple[Any, dict | None, int] | None = None,
) -> Any:
    """``name``: the Tune experiment's folder (an extension runs in its own, see
    resweep.study.extend); ``search``: ``(search_alg, param_space, num_samples)`` instead of
    :func:`searcher_and_space` (an extension's trials, a warm-started searcher)."""
    from ray import tune

    from resweep.study.layout import TUNE_DIR

    search_alg, param_space, num_samples = search or searcher_and_space(study, layout)
    return tune.Tuner(
        trainable(study, layout, storage, artifact_keys),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler(study),
            num_samples=num_samples,
            max_concurrent_trials=max_concurrent(study),
            time_budget_s=study.budget.time_limit_s,
            # the next trial runs in the finished trial's process: no new Python, no second
            # import of torch and the data stack (~5 s a trial on a 2-core machine); nothing
            # of a trial outlives it but small lru caches (a failed trial's actor is not reused)
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=name or TUNE_DIR,
            storage_path=storage,
            callbacks=callbacks,
            failure_config=tune.FailureConfig(max_failures=study.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=study.base.train.checkpoints_to_keep),
            verbose=0,
        ),
    )


def restore_tuner(
    study: StudyConfig, layout: StudyLayout, storage: str, tune_path: str,
    artifact_keys: dict[str, str] | None = None,
) -> Any:
    """The restored run config holds the pickled StudyCallback; its setup() reloads the study's
    files, so it continues exactly where the files stopped. The searcher's state (seed groups
    included) comes back from Tune's experiment checkpoint."""
    from ray import tune

    _, param_space, _ = searcher_and_space(study, layout)
    return tune.Tuner.restore(
        tune_path,
        trainable=trainable(study, layout, storage, artifact_keys),
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
        param_space=param_space,
    )
