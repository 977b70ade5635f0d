"""Starting or joining Ray.

The embedded local Ray listens on loopback only: its node IP address is 127.0.0.1, which is
what Ray (since 2.5x) binds its GCS server, raylet, object manager and workers' gRPC servers to
(earlier releases bound 0.0.0.0); the dashboard binds to ``dashboard_host`` (127.0.0.1). Ray's
token authentication stays as Ray sets it (on by default for a new local instance). Joining a
cluster (``address``) changes nothing of the cluster's own settings.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

# Trials read config files relative to where the user started them.
os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
# Ray's periodic usage report would try the network; this platform runs offline too.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Our workers log their own progress lines; Ray's print patch would print each one twice.
os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")
# Tune's "new output engine" prints its configuration box and error paths whatever the
# verbosity; the legacy one honours verbose=0. resweep shows its own progress (study/progress.py).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
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
        with _loopback_node_ip():
            ray.init(
                # "local": always a new instance of our own; without it ray.init joins the last
                # Ray started on this machine (/tmp/ray/ray_current_cluster), e.g. someone else's
                address="local",
                num_cpus=num_cpus,
                num_gpus=num_gpus,
                include_dashboard=dashboard,
                dashboard_host=dashboard_host,
                _node_ip_address=LOOPBACK,
                **kwargs,
            )
    return ray.cluster_resources()


LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def _loopback_node_ip() -> Iterator[None]:
    """Let ``_node_ip_address=127.0.0.1`` stand while the local instance starts.

    ``ray.init`` replaces a loopback node IP with the machine's routable address unless Ray
    runs in its single-machine mode (``ENABLE_RAY_CLUSTER`` false, the default on macOS and
    Windows, set from ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER``). A local instance is exactly that;
    the flag is restored afterwards (once started, Ray reads the node IP from the node itself),
    so joining a cluster later in the same process is unaffected.
    """
    from ray._private import ray_constants

    previous = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = previous
