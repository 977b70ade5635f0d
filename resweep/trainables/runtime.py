"""Starting or joining Ray. Local Ray binds to 127.0.0.1; nothing listens publicly by default."""

from __future__ import annotations

import os
from typing import Any

# Trials read config files relative to where the user started them.
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray's periodic usage report would try the network; this platform runs offline too.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Our workers log their own progress lines; Ray's print patch would print each one twice.
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
# Every trial checkpoints at each evaluation; Tune's "snapshotting often" warning is expected.
os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def init_ray(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = True,
    dashboard_host: str = "127.0.0.1",
    quiet: bool = True,
) -> dict[str, Any]:
    """Connect to ``address`` (a cluster, or "auto") or start an embedded local Ray.

    The local instance's dashboard binds to ``dashboard_host``: loopback unless the user says
    otherwise. (Ray Train's state queries need the dashboard process running.)
    """
    import ray

    if ray.is_initialized():
        return ray.cluster_resources()
    env_vars = {
        key: os.environ[key]
        for key in (
            "RAY_CHDIR_TO_TRIAL_DIR",
            "RAY_TRAIN_V2_ENABLED",
            "RAY_TRAIN_ENABLE_PRINT_PATCH",
            "RESWEEP_CACHE",
            "RESWEEP_DATA",
            "RESWEEP_VGG_WEIGHTS",
            "PYTHONPATH",
        )
        if key in os.environ
    }
    kwargs: dict[str, Any] = {
        "runtime_env": {"env_vars": env_vars},
        "log_to_driver": not quiet,
        "configure_logging": True,
        "logging_level": "WARNING" if quiet else "INFO",
    }
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            dashboard_host=dashboard_host,
            **kwargs,
        )
    return ray.cluster_resources()
