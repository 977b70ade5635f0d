"""Ray's own autoscaling simulator (the ``fake_multinode`` node provider behind
``ray.cluster_utils.AutoscalingCluster``), started so that it can share a machine.

``AutoscalingCluster.start()``/``shutdown()`` run ``ray stop --force``, which ends every Ray on
the machine (someone else's tests included), and always use GCS port 6379; its base config
(``fake_multi_node/example.yaml``) is not in the wheel either. Here the cluster config is
``AutoscalingCluster``'s, with its base written out, the head gets a free port and a temp dir
of its own, and it runs in a session of its own: shutting down ends exactly the processes of
that session (the head's daemons, the autoscaler and the nodes it launched).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

#: the fields of Ray's fake_multi_node/example.yaml that AutoscalingCluster does not replace
_BASE_CONFIG = {
    "cluster_name": "fake_multinode",
    "max_workers": 8,
    "provider": {"type": "fake_multinode", "use_node_id_as_ip": True,
                 "disable_node_updaters": True, "disable_launch_config_check": True},
    "auth": {}, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1, "docker": {},
    "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
    "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
    "rsync_exclude": [], "rsync_filter": [], "head_node_type": "ray.head.default",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_config(head_resources: dict, worker_node_types: dict, gcs_address: str, **config_kwargs) -> dict:
    """What ``AutoscalingCluster(head_resources, worker_node_types, **config_kwargs)`` writes,
    pointed at our GCS."""
    config = {**json.loads(json.dumps(_BASE_CONFIG)), **config_kwargs}
    config["available_node_types"] = {
        **worker_node_types,
        "ray.head.default": {"resources": dict(head_resources), "node_config": {}, "max_workers": 0},
    }
    config["provider"]["gcs_address"] = gcs_address
    return config


def _session_pids(sid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getsid(int(entry.name)) == sid:
                    pids.append(int(entry.name))
    return pids


@contextlib.contextmanager
def autoscaling_cluster(
    head_resources: dict, worker_node_types: dict, env: dict | None = None, token_file: Path | None = None,
    **config_kwargs,
) -> Iterator[tuple[str, dict[str, str]]]:
    """Start the simulated autoscaling cluster; yields its GCS address (for ``--address``) and
    the environment variables a client needs to join it (token authentication, as the shipped
    cluster.yaml sets it: Ray asks for the token when a driver names an address)."""
    import secrets

    from ray._private.services import get_node_ip_address

    port = _free_port()
    address = f"{get_node_ip_address()}:{port}"
    folder = Path(tempfile.mkdtemp(prefix="rsas-", dir="/tmp"))  # short: Ray's socket paths
    config_path = folder / "autoscaling.json"
    config_path.write_text(json.dumps(cluster_config(head_resources, worker_node_types, address, **config_kwargs)))
    token = token_file or folder / "ray_token"
    if not token.is_file():
        token.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    head = dict(head_resources)
    cmd = [sys.executable, "-m", "ray.scripts.scripts", "start", "--head", f"--port={port}",
           f"--autoscaling-config={config_path}", f"--temp-dir={folder / 'ray'}",
           # ports of its own: another Ray on this machine may hold the defaults (8265, 10001,
           # the dashboard agent's 52365: a raylet whose agent cannot bind never registers)
           "--include-dashboard=false", f"--dashboard-port={_free_port()}",
           f"--ray-client-server-port={_free_port()}", f"--dashboard-agent-listen-port={_free_port()}",
           f"--dashboard-agent-grpc-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}",
           f"--metrics-export-port={_free_port()}",
           f"--num-cpus={head.pop('CPU', 0)}", f"--num-gpus={head.pop('GPU', 0)}", "--disable-usage-stats"]
    if head:
        cmd.append(f"--resources={json.dumps(head)}")
    run_env = {**os.environ, **(env or {}), **auth, "AUTOSCALER_UPDATE_INTERVAL_S": "1", "RAY_FAKE_CLUSTER": "1"}
    log = folder / "ray_start.log"  # a file, not a pipe: the daemons keep what they inherit open
    with open(log, "wb") as out:
        starter = subprocess.Popen(cmd, env=run_env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    sid = starter.pid  # the session's id: every process Ray starts from here stays in it
    keep = True
    try:
        try:
            code = starter.wait(timeout=240)
        except subprocess.TimeoutExpired:
            code = "timeout"
        if code != 0:
            raise RuntimeError(f"ray start failed ({code}):\n{log.read_text()[-3000:]}")
        yield address, auth
    except BaseException:
        keep = True  # a failure's reader wants the nodes' logs (<folder>/ray/session_latest/logs)
        print(f"autoscaling cluster logs kept in {folder}", file=sys.stderr)
        raise
    else:
        keep = False
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _session_pids(sid)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + 10
            while _session_pids(sid) and time.monotonic() < deadline:
                time.sleep(0.2)
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)  # Ray's session logs of every node
