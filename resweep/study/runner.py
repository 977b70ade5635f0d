"""Running, resuming and inspecting a study with Ray Tune (+ Optuna)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from resweep.errors import ConfigError, ResweepError
from resweep.study.results import StudyResults
from resweep.study.spec import StudyConfig, load_study, study_from_dict, study_to_yaml
from resweep.trainables.runtime import init_ray
from resweep.trainables.tune_trial import study_trial, trial_params

STUDY_FILE = "study.yaml"
TUNE_DIR = "tune"


# --------------------------------------------------------------------------- progress + results
def _make_callback(
    study: StudyConfig, study_dir: Path, total_trials: int | None, quiet: bool, prepared: Any = None
):
    from ray.tune import Callback

    class StudyCallback(Callback):
        """Driver-side: records every report in the study's Parquet files and prints progress."""

        def setup(self, **info: Any) -> None:
            # (re)load from disk, also after a restore: the files are the source of truth
            self.results = StudyResults(study_dir)
            self.results.meta = json.loads((study_dir / "study.json").read_text())
            self.last_print = 0.0
            self.total = total_trials
            self.iterations = study.base.train.iterations

        def on_trial_start(self, iteration, trials, trial, **info):
            label, params, seed = trial_params(trial.config, study.seeds)
            config = study.experiment_for(params, seed)
            self.results.trial_started(trial.trial_id, label, seed, params, config.to_dict())
            if prepared is not None:  # stages: which artifacts the trial reads (role -> key)
                self.results.trials[trial.trial_id]["artifacts"] = json.dumps(prepared.roles_for(config))
            self._progress(trials)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            self.results.trial_result(trial.trial_id, result)
            self._progress(trials)

        def on_trial_complete(self, iteration, trials, trial, **info):
            self.results.trial_completed(trial.trial_id, trial.last_result, self.iterations)
            self._progress(trials, force=True)

        def on_trial_error(self, iteration, trials, trial, **info):
            message = getattr(trial, "error_msg", None) or _read_error(trial) or "trial raised"
            self.results.trial_errored(trial.trial_id, message)
            self._progress(trials, force=True)

        def on_experiment_end(self, trials, **info):
            self.results.flush(force=True)
            self._progress(trials, force=True)

        def _progress(self, trials, force: bool = False) -> None:
            now = time.monotonic()
            if quiet or (not force and now - self.last_print < 5.0):
                return
            self.last_print = now
            print(progress_line(self.results, study, len(trials), self.total), flush=True)

    return StudyCallback()


def _read_error(trial: Any) -> str | None:
    try:
        path = Path(trial.local_path) / "error.txt"
        return path.read_text() if path.is_file() else None
    except Exception:
        return None


def progress_line(results: StudyResults, study: StudyConfig, launched: int, total: int | None) -> str:
    c = results.counts()
    done = c["finished"] + c["diverged"] + c["pruned"] + c["errored"]
    pending = max(0, (total or launched) - done - c["running"])
    objective = study.primary
    best = results.best(objective.metric, objective.mode)
    best_text = (
        f"best {objective.metric} {best['best.' + objective.metric]:.4g} ({best['trial_id']})"
        if best
        else f"best {objective.metric}: -"
    )
    total_text = f"/{total}" if total else ""
    return (
        f"[{time.strftime('%H:%M:%S')}] {study.name}: {done}{total_text} done "
        f"({c['finished']} finished, {c['pruned']} pruned, {c['diverged']} diverged, {c['errored']} errored), "
        f"{c['running']} running, {pending} pending | {best_text}"
    )


# --------------------------------------------------------------------------- building the Tuner
def _settings(study: StudyConfig, study_dir: Path, storage: str, prepared: Any = None) -> dict[str, Any]:
    r = study.resources
    return {
        # stages: where artifacts live and definition digest -> key of those the driver made
        "storage": storage,
        "artifacts": dict(prepared.keys) if prepared is not None else {},
        "seeds": list(study.seeds),
        "workers": r.workers,
        "in_process": r.in_process,
        "cpus_per_worker": r.cpus_per_worker,
        "gpus_per_worker": r.gpus_per_worker,
        "max_failures": study.failure.max_failures,
        "train_storage": storage.rstrip("/") + "/train_runs",
        "cache_dir": str(study_dir / "cache"),
        "image_root": str(study_dir / "images"),
    }


def _trainable(study: StudyConfig, study_dir: Path, storage: str, prepared: Any = None):
    from ray import tune

    settings = _settings(study, study_dir, storage, prepared)
    fn = tune.with_parameters(study_trial, base=study.base.to_dict(), settings=settings)
    r = study.resources
    if r.workers == 1 and r.in_process:
        resources = {"CPU": r.cpus_per_worker, "GPU": r.gpus_per_worker}
    else:
        # the trial process only drives a TorchTrainer, whose workers hold the resources;
        # Ray needs a non-empty bundle, so the driver asks for a sliver of a CPU
        resources = {"CPU": 0.01}
    return tune.with_resources(fn, resources)


def _searcher_and_space(study: StudyConfig, study_dir: Path):
    """(search_alg, param_space, num_samples, total_trials)."""
    from ray import tune

    if study.search.algorithm in ("grid", "random"):
        trials = study.trial_configs()
        return None, {"trial": tune.grid_search(trials)}, 1, len(trials)

    import optuna
    from ray.tune.search import Repeater

    from resweep.search_spaces import optuna_define_by_run
    from resweep.study.optuna_search import DivergenceAwareOptunaSearch

    storage = None
    if study.search.optuna_storage:
        url = study.search.optuna_storage
        if url == "sqlite":
            url = f"sqlite:///{(study_dir / 'optuna.db').resolve()}"
        storage = optuna.storages.RDBStorage(url)
    metrics = [o.metric for o in study.objectives]
    modes = [o.mode for o in study.objectives]
    multi = study.search.algorithm == "optuna_multi"
    sampler = (
        optuna.samplers.NSGAIISampler(seed=study.search.seed)
        if multi
        else optuna.samplers.TPESampler(seed=study.search.seed, n_startup_trials=min(10, study.search.num_samples // 2 or 1))
    )
    searcher = DivergenceAwareOptunaSearch(
        space=optuna_define_by_run(study.space, study.base.to_dict()),
        metric=metrics if multi else metrics[0],
        mode=modes if multi else modes[0],
        sampler=sampler,
        study_name=study.name,
        storage=storage,
    )
    total = study.search.num_samples * len(study.seeds)
    if study.budget.max_trials:
        total = min(total, study.budget.max_trials)
    if len(study.seeds) > 1:
        # each suggestion runs once per seed; Optuna is told the mean over seeds
        searcher = Repeater(searcher, repeat=len(study.seeds), set_index=True)
    return searcher, None, total, total


def _scheduler(study: StudyConfig):
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    s = study.scheduler
    max_t = study.base.train.iterations
    grace = s.grace_period or max(1, study.base.eval.every)
    objective = study.primary
    if s.kind == "asha":
        return ASHAScheduler(
            time_attr="iteration", metric=objective.metric, mode=objective.mode,
            max_t=max_t, grace_period=min(grace, max_t), reduction_factor=s.reduction_factor,
        )
    if s.kind == "hyperband":
        return HyperBandScheduler(
            time_attr="iteration", metric=objective.metric, mode=objective.mode,
            max_t=max_t, reduction_factor=s.reduction_factor,
        )
    return None


def _max_concurrent(study: StudyConfig) -> int:
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


def default_study_dir(study: StudyConfig) -> Path:
    return Path("studies") / study.name


def _prepare_dir(study: StudyConfig, study_dir: Path, source: str | None) -> str:
    study_dir.mkdir(parents=True, exist_ok=True)
    (study_dir / STUDY_FILE).write_text(study_to_yaml(study))
    total = None if study.search.algorithm.startswith("optuna") else len(study.trial_configs())
    meta = {
        "name": study.name,
        "description": study.description,
        "source": source,
        "knobs": study.knobs,
        "seeds": study.seeds,
        "objectives": [o.model_dump() for o in study.objectives],
        "baseline": study.baseline,
        "variants": [v.label for v in study.variants],
        "paper": study.paper.model_dump() if study.paper else None,
        "iterations": study.base.train.iterations,
        "total_trials": total,
        "task": study.base.task.model_dump(mode="json"),
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    results = StudyResults(study_dir, meta=meta)
    results.write_meta()
    storage = study.storage or str(study_dir.resolve())
    return storage


def _fit(tuner: Any, study_dir: Path) -> None:
    results = tuner.fit()
    errors = [r for r in results if r.error]
    final = StudyResults(study_dir)
    counts = final.counts()
    print(
        f"\nstudy done: {counts['finished']} finished, {counts['pruned']} pruned, "
        f"{counts['diverged']} diverged, {counts['errored']} errored"
    )
    print(f"results: {study_dir}  (trials.parquet, curves.parquet, per_image.parquet)")
    if errors:
        print(f"{len(errors)} trial(s) errored; see `resweep status {study_dir}`", file=sys.stderr)


def run_study(
    study: StudyConfig | str | Path,
    *,
    study_dir: str | Path | None = None,
    address: str | None = None,
    fresh: bool = False,
    quiet: bool = False,
    num_cpus: int | None = None,
    source: str | None = None,
) -> Path:
    """Run a study to completion (or resume it if its folder already holds one)."""
    if not isinstance(study, StudyConfig):
        source = str(study)
        study = load_study(study)
    study_dir = Path(study_dir) if study_dir else default_study_dir(study)
    study_dir = study_dir.resolve()
    if (study_dir / TUNE_DIR).exists():
        if fresh:
            raise ResweepError(f"{study_dir} already holds a study; remove it or drop --fresh")
        print(f"{study_dir} already holds this study: resuming it")
        return resume_study(study_dir, address=address, quiet=quiet, num_cpus=num_cpus)

    from ray import tune

    from resweep.engine.preflight import preflight

    preflight(study.base)  # bad data fails here, before any trial starts
    storage = _prepare_dir(study, study_dir, source)
    init_ray(address, num_cpus=num_cpus)
    prepared = _prepare_stages(study, study_dir, storage)
    search_alg, param_space, num_samples, total = _searcher_and_space(study, study_dir)
    callback = _make_callback(study, study_dir, total, quiet, prepared)
    tuner = tune.Tuner(
        _trainable(study, study_dir, storage, prepared),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=_scheduler(study),
            num_samples=num_samples,
            max_concurrent_trials=_max_concurrent(study),
            time_budget_s=study.budget.time_limit_s,
        ),
        run_config=tune.RunConfig(
            name=TUNE_DIR,
            storage_path=storage,
            callbacks=[callback],
            failure_config=tune.FailureConfig(max_failures=study.failure.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=study.base.train.checkpoints_to_keep),
            verbose=0,
        ),
    )
    print(f"study '{study.name}': {total if total else '?'} trials; folder {study_dir}")
    _fit(tuner, study_dir)
    _mirror_results(study_dir, storage)
    return study_dir


def resume_study(
    study_dir: str | Path, *, address: str | None = None, quiet: bool = False, num_cpus: int | None = None
) -> Path:
    """Continue an interrupted study: finished trials are kept, unfinished ones continue from
    their last checkpoint, errored ones are not rerun."""
    from ray import tune

    study_dir = Path(study_dir).resolve()
    study_file = study_dir / STUDY_FILE
    if not study_file.is_file():
        raise ResweepError(f"{study_dir} is not a study folder (no {STUDY_FILE})")
    from resweep.config import read_yaml

    study = study_from_dict(read_yaml(study_file), source=str(study_file))
    storage = study.storage or str(study_dir)
    tune_path = storage.rstrip("/") + "/" + TUNE_DIR
    init_ray(address, num_cpus=num_cpus)
    if not tune.Tuner.can_restore(tune_path):
        raise ResweepError(f"no Ray Tune state to resume in {tune_path}")
    prepared = _prepare_stages(study, study_dir, storage)  # finished artifacts are reused
    _, param_space, _, _ = _searcher_and_space(study, study_dir)
    tuner = tune.Tuner.restore(
        tune_path,
        trainable=_trainable(study, study_dir, storage, prepared),
        resume_unfinished=True,
        resume_errored=False,
        restart_errored=False,
        param_space=param_space,
    )
    # The restored run config holds the pickled StudyCallback; its setup() reloads the
    # study's files from disk, so it continues exactly where the files stopped.
    print(f"resuming study '{study.name}' in {study_dir}")
    _fit(tuner, study_dir)
    _mirror_results(study_dir, storage)
    return study_dir


def _prepare_stages(study: StudyConfig, study_dir: Path, storage: str) -> Any:
    """Stages: make the artifacts the trials need (each once, as Ray tasks) before any trial."""
    from resweep.stages.on_ray import prepare_stages

    if study.search.algorithm in ("grid", "random"):
        experiments = [study.experiment_for(t["params"], t["seed"]) for t in study.trial_configs()]
    else:  # Optuna samples at run time: the base config's stages here, others in the trial
        experiments = [study.base]
    r = study.resources
    return prepare_stages(experiments, storage, study_dir, cpus=r.cpus_per_worker, gpus=r.gpus_per_worker)


def _mirror_results(study_dir: Path, storage: str) -> None:
    """With remote storage (s3://...), copy the study's own files next to Ray's results."""
    if "://" not in storage:
        return
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage)
    for name in ("trials.parquet", "curves.parquet", "per_image.parquet", "artifacts.parquet", "study.json", STUDY_FILE):
        src = study_dir / name
        if src.is_file():
            pafs.copy_files(str(src), f"{root}/{name}", destination_filesystem=fs)


# --------------------------------------------------------------------------- status
def print_status(study_dir: str | Path) -> None:
    study_dir = Path(study_dir)
    if not (study_dir / "study.json").is_file():
        raise ResweepError(f"{study_dir} is not a study folder (no study.json)")
    results = StudyResults(study_dir)
    meta = results.meta
    try:
        from resweep.config import read_yaml

        study = study_from_dict(read_yaml(study_dir / STUDY_FILE), source=str(study_dir / STUDY_FILE))
    except (ConfigError, FileNotFoundError):
        study = None
    print(f"study {meta.get('name')}  ({study_dir})")
    if study is not None:
        print(progress_line(results, study, len(results.trials), meta.get("total_trials")))
    rows = sorted(results.trials.values(), key=lambda r: (r.get("label") or "", str(r.get("trial_id"))))
    objective = (meta.get("objectives") or [{"metric": "loss.total", "mode": "min"}])[0]
    key = f"final.{objective['metric']}"
    knobs = meta.get("knobs", [])
    header = ["trial", "status", "seed", "iter", *knobs, objective["metric"]]
    table = [header]
    for row in rows:
        value = row.get(key)
        table.append(
            [
                str(row.get("trial_id")),
                str(row.get("status")),
                str(row.get("seed")),
                str(row.get("iterations")),
                *[str(row.get(f"param.{k}", "")) for k in knobs],
                f"{value:.4f}" if isinstance(value, float) else "-",
            ]
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for r in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)))
    errored = [r for r in rows if r.get("status") == "errored"]
    for row in errored:
        print(f"\n{row['trial_id']} errored: {(row.get('error') or '').strip().splitlines()[-1:]}")

