"""Building the Ray Tune ``Tuner`` of a study: the same trainable, searcher and scheduler for
``run`` and for ``resume`` (which must rebuild what Tune cannot pickle the same way)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from resweep.study.capacity import (
    Cluster,
    Concurrency,
    decide_concurrency,
    read_cluster,
    trial_shape,
)
from resweep.study.capacity import check_trial_fits as _check_trial_fits
from resweep.study.layout import TRAIN_RUNS_DIR, StudyLayout
from resweep.study.spec import StudyConfig
from resweep.study.trial_spec import TRIAL_KEY, TrialSettings, TrialSpec
from resweep.trainables.relay import relay_name
from resweep.trainables.tune_trial import study_trial
from resweep.uri import join_uri

logger = logging.getLogger("resweep.study")


@dataclass
class StudyResolver:
    """Optuna's draws -> a resolved :class:`TrialSpec` (picklable: Tune saves the searcher)."""

    study: StudyConfig

    def __call__(self, params: dict[str, Any], seed: int, group: str) -> TrialSpec:
        from resweep.stages import study_keys

        spec = self.study.trial_spec(params, seed, group=group)
        keys = study_keys.active()  # the driver's saved keys: a sampled stage gets its key here
        return keys.attach(spec) if keys is not None else spec


def trial_settings(
    study: StudyConfig, layout: StudyLayout, storage: str, artifact_keys: dict[str, str] | None = None
) -> TrialSettings:
    r = study.resources
    return TrialSettings(
        workers=r.workers,
        in_process=r.in_process,
        cpus_per_worker=r.cpus_per_worker,
        gpus_per_worker=r.gpus_per_worker,
        custom_resources=dict(r.custom_resources),
        max_failures=study.failure.max_failures,
        train_storage=join_uri(storage, TRAIN_RUNS_DIR),
        cache_dir=str(layout.cache),
        image_root=str(layout.images),
        study_dir=str(layout.root),
        storage=storage,
        artifact_keys=dict(artifact_keys or {}),
        relay=relay_name(str(layout.root)),  # the StudyCallback starts it (study_dir=layout.root)
    )


def trainable(
    study: StudyConfig, layout: StudyLayout, storage: str, artifact_keys: dict[str, str] | None = None
) -> Any:
    from ray import tune

    settings = trial_settings(study, layout, storage, artifact_keys)
    fn = tune.with_parameters(study_trial, settings=settings)
    # the trial process's own bundle (a sliver of CPU when a TorchTrainer's workers hold the rest)
    return tune.with_resources(fn, trial_shape(study.resources).process)


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


def check_trial_fits(study: StudyConfig, *, fixed: bool, cluster: Cluster | None = None) -> None:
    """Refuse resources no trial could ever get (see :func:`resweep.study.capacity.check_trial_fits`)."""
    _check_trial_fits(study, cluster or read_cluster(), fixed=fixed)


def max_concurrent(study: StudyConfig, cluster: Cluster | None = None) -> Concurrency:
    """Trials at a time: ``budget.max_concurrent``, else as many as the cluster holds, on an
    autoscaling cluster as many as it can grow to (see :mod:`resweep.study.capacity`)."""
    return decide_concurrency(study, cluster or read_cluster(), total_trials(study))


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
    concurrency = max_concurrent(study)
    print(concurrency.line, flush=True)
    return tune.Tuner(
        trainable(study, layout, storage, artifact_keys),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler(study),
            num_samples=num_samples,
            max_concurrent_trials=concurrency.trials,
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
