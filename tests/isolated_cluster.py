"""A multi-node Ray cluster on one machine whose nodes do NOT share a disk.

The head (0 CPUs, so no trial or stage task runs there) lives in this mount namespace, as the
driver does. Each worker node is started with ``ray start --address=... --block`` from inside
its own mount namespace (``unshare --mount``): a private tmpfs over ``/tmp`` (its ``/tmp/ray``,
its scratch, and whatever the driver keeps under ``/tmp``: the tests' study folders) and over
each extra folder named in ``hide``. The Python installation, the code and the virtualenv stay
visible, as on a node image: those under ``/tmp`` are bind-mounted back over the tmpfs. Every
worker node has the custom resource ``trial_node`` (the head has none).

``python tests/isolated_cluster.py``: start a cluster, show that a task on a worker node
cannot see a file the driver wrote under /tmp, stop. Needs root (or user namespaces with
mount rights); :func:`why_not_supported` says why not otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

TRIAL_RESOURCE = "trial_node"


def client_env() -> dict[str, str]:
    """What a process that joins the cluster (a driver, ``ray start``) needs in its environment:
    Ray's token authentication, on for a cluster started by ``ray start --head``, with the token
    in ``~/.ray``; and loopback addresses left alone (Ray on Linux replaces 127.0.0.1 with the
    machine's routable address, where nothing of this cluster listens). ``ray_node.py`` does the
    latter for the nodes themselves."""
    return {"RAY_AUTH_MODE": "token", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def why_not_supported() -> str | None:
    """None when this machine can make a worker's private mount namespace, else the reason."""
    if sys.platform != "linux":
        return "mount namespaces need Linux"
    probe = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", "mount -t tmpfs tmpfs /tmp"],
        capture_output=True, text=True,
    )
    if probe.returncode:
        return f"`unshare --mount` + `mount -t tmpfs` not permitted here: {probe.stderr.strip()[:200]}"
    if not Path("/dev/shm").is_dir():
        return "no /dev/shm to stage bind mounts in"
    return None


def _kept_under_tmp() -> list[str]:
    """Real paths under /tmp the node needs: the Python installation, venv, sys.path entries."""
    candidates = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(sys.executable)}
    candidates.update(p for p in sys.path if p and os.path.isdir(p))
    candidates.update(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p and os.path.isdir(p))
    tmp = os.path.realpath("/tmp")
    found = sorted({os.path.realpath(p) for p in candidates if os.path.realpath(p).startswith(tmp + "/")})
    # the outermost folders only (a venv's site-packages is inside the venv)
    outer: list[str] = []
    for path in found:
        if not any(path.startswith(o + "/") for o in outer):
            outer.append(path)
    return outer


def namespace_script(argv: Sequence[str], hide: Sequence[str], keep: Sequence[str] = ()) -> str:
    """A ``sh -c`` script, for ``unshare --mount``, that runs ``argv`` with a private tmpfs over
    /tmp and over each folder in ``hide`` (the Python installation, code and venv kept visible,
    and the folders under /tmp in ``keep``)."""
    keep = [*_kept_under_tmp(), *(os.path.realpath(k) for k in keep)]
    lines = ["set -e", "stage=$(mktemp -d /dev/shm/resweep-node-XXXXXX)"]
    for i, path in enumerate(keep):  # park what must stay visible outside /tmp ...
        lines += [f"mkdir -p $stage/{i}", f"mount --bind {shlex.quote(path)} $stage/{i}"]
    lines.append("mount -t tmpfs tmpfs /tmp")
    for i, path in enumerate(keep):  # ... and put it back over the private tmpfs
        lines += [f"mkdir -p {shlex.quote(path)}", f"mount --bind $stage/{i} {shlex.quote(path)}",
                  f"umount $stage/{i}"]
    lines.append("rm -rf $stage")
    for path in hide:
        if not os.path.realpath(path).startswith("/tmp/"):
            lines.append(f"mount -t tmpfs tmpfs {shlex.quote(path)}")
    lines.append("exec " + " ".join(shlex.quote(a) for a in argv))
    return "\n".join(lines)


def in_own_namespace(argv: Sequence[str], hide: Sequence[str] = (), keep: Sequence[str] = ()) -> list[str]:
    """``argv`` as a process of another machine: its own mount namespace (see namespace_script)."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", namespace_script(argv, hide, keep)]


@dataclass
class IsolatedCluster:
    address: str
    head_temp: str
    processes: list[subprocess.Popen] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(f"--- {p}\n{p.read_text(errors='replace')[-chars:]}" for p in self.logs if p.is_file())


def _agent_ports() -> list[str]:
    """Ports of one node's agents: Ray's fixed defaults (52365...) clash with other Rays here,
    and a known listen port lets ray_node.py spare the raylet its 15 s wait for the agent."""
    return [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
            f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]


def _ray_cli() -> list[str]:
    return [sys.executable, str(Path(__file__).with_name("ray_node.py"))]


def _stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group of one `ray start --block` (it stops the node's processes),
    then SIGKILL what is left: only our own groups, never `ray stop` (other Rays may run here)."""
    for sig, wait_s in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


@contextlib.contextmanager
def isolated_cluster(
    folder: Path, *, workers: int = 2, cpus_per_worker: int = 1, hide: Sequence[str] = (),
    env: dict[str, str] | None = None, timeout_s: float = 90,
) -> Iterator[IsolatedCluster]:
    """Start the head and ``workers`` isolated worker nodes; yields once all have joined."""
    # (the nodes keep Ray's multi-node switch on: ray_node.py keeps their loopback address)
    env = {**(env or os.environ), **client_env(), "RAY_raylet_start_wait_time_s": "60"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # a short path: Ray's unix sockets live in the session folder (108-byte limit)
    head_temp = tempfile.mkdtemp(prefix="rwh-", dir="/tmp")
    cluster = IsolatedCluster(address=address, head_temp=head_temp)
    folder.mkdir(parents=True, exist_ok=True)

    def launch(name: str, argv: list[str], nodes: int) -> None:
        """Start one node and wait until ``nodes`` are alive. A raylet gives its agents ~15 s
        to report their ports (fixed in Ray); on a loaded machine they can miss it and the
        node dies at start: try again, a few times."""
        for attempt in range(1, 4):
            log = folder / f"{name}-{attempt}.log"
            cluster.logs.append(log)
            with open(log, "wb") as out:
                process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env,
                                           start_new_session=True)
            cluster.processes.append(process)
            try:
                _wait_for_nodes(cluster, process, nodes, timeout_s)
                return
            except RuntimeError:
                _stop(process)
                cluster.processes.remove(process)
                if attempt == 3:
                    raise

    try:
        launch("head", [*_ray_cli(), "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
                        "--num-gpus=0", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                        f"--temp-dir={head_temp}", "--disable-usage-stats", *_agent_ports()], 1)
        resources = json.dumps({TRIAL_RESOURCE: cpus_per_worker})
        for i in range(workers):
            ray_args = [*_ray_cli(), "start", "--block", f"--address={address}", f"--num-cpus={cpus_per_worker}",
                        "--num-gpus=0", "--node-ip-address=127.0.0.1", f"--resources={resources}",
                        "--disable-usage-stats", *_agent_ports()]
            launch(f"worker{i + 1}", in_own_namespace(ray_args, hide), 2 + i)
        yield cluster
    finally:
        for process in reversed(cluster.processes):
            _stop(process)
        with contextlib.suppress(OSError):
            import shutil

            shutil.rmtree(head_temp, ignore_errors=True)


def _wait_for_nodes(cluster: IsolatedCluster, process: subprocess.Popen, count: int, timeout_s: float) -> None:
    """Poll the GCS from a short-lived subprocess (this process stays free of Ray) until
    ``count`` nodes are alive; RuntimeError if ``process`` (the node just started) exits."""
    code = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes()))")
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"a Ray node exited at start:\n{cluster.log_tail()}")
        try:
            probe = subprocess.run([sys.executable, "-c", code, cluster.address], capture_output=True, text=True,
                                   env={**os.environ, **client_env()}, timeout=120)
        except subprocess.TimeoutExpired as exc:
            probe = subprocess.CompletedProcess(exc.cmd, 1, "", "the GCS did not answer in 120 s")
        if probe.returncode == 0 and probe.stdout.strip().splitlines()[-1:] == [str(count)]:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"{count} Ray nodes not up in {timeout_s:.0f} s:\n{probe.stderr[-2000:]}\n"
                               f"{cluster.log_tail()}")
        time.sleep(1.0)


def _demo() -> None:
    os.environ.update(client_env())  # before Ray reads it, at import
    import ray

    reason = why_not_supported()
    if reason:
        print(f"not supported here: {reason}")
        return
    folder = Path(tempfile.mkdtemp(prefix="resweep-isolated-"))
    secret = folder / "driver-only.txt"
    secret.write_text("the driver's disk")
    start = time.monotonic()
    with isolated_cluster(folder / "nodes") as cluster:
        print(f"cluster up in {time.monotonic() - start:.1f} s at {cluster.address}")
        ray.init(address=cluster.address, logging_level="ERROR")

        @ray.remote(num_cpus=1, resources={TRIAL_RESOURCE: 1})
        def look(path: str) -> tuple[str, bool, bool]:
            return ray.get_runtime_context().get_node_id(), os.path.exists(path), os.path.isdir(sys.prefix)

        driver_node = ray.get_runtime_context().get_node_id()
        for node, sees, has_python in ray.get([look.remote(str(secret)) for _ in range(4)]):
            print(f"node {node[:8]} (driver's: {node == driver_node}): sees the driver's file: {sees}, "
                  f"python installation: {has_python}")
        ray.shutdown()


if __name__ == "__main__":
    _demo()
