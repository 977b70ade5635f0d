"""A study's preflight: the engine's checks (data, named files, feature-network weights) on every
configuration the study will run, not only its base, before Ray starts.

Grid and random studies: each seed group's resolved experiment (a variant that switches on a
method whose weights are missing is refused with the variant's label and the field). Optuna
studies: the base and each distribution's extreme values (the configurations ``validate_trials``
already builds), since the sampled ones exist only at run time. Data sections shared by many
configurations are read and verified once.
"""

from __future__ import annotations

import json

from resweep.config import ExperimentConfig
from resweep.errors import ConfigError, DataError
from resweep.study.spec import StudyConfig


def study_experiments(study: StudyConfig) -> list[tuple[str, ExperimentConfig]]:
    """``(how an error names it, experiment)`` for each configuration to check (seed aside)."""
    if not study.is_optuna:
        experiments, groups = [], set()
        for spec in study.trial_specs():
            if spec.group not in groups:  # seeds of a group differ only by train.seed
                groups.add(spec.group)
                experiments.append((study.describe_trial(spec.label, spec.params),
                                    ExperimentConfig.from_dict(spec.experiment)))
        return experiments
    experiments = [("the base config", study.base)]
    for path, value, params in study.probe_overrides():
        experiments.append((f"space.{path} = {value!r}", study.base.with_overrides(params)))
    return experiments


def preflight_study(study: StudyConfig, *, verify_images: bool = True) -> None:
    """Raise ConfigError/DataError, naming the configuration, for any that could not run."""
    from resweep.engine.preflight import check_named_files, preflight

    data_checked: set[str] = set()
    for where, experiment in study_experiments(study):
        data = json.dumps(experiment.model_dump(mode="json", include={"task", "data", "eval"}), sort_keys=True)
        try:
            if data in data_checked:
                check_named_files(experiment)
            else:
                preflight(experiment, verify_images=verify_images)
                data_checked.add(data)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc.message}", source=exc.source, field=exc.field) from None
        except DataError as exc:
            raise DataError(f"{where}: {exc}") from None
