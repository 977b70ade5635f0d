"""Driver side of the multi-node stages test (run as a subprocess: it owns its Ray cluster).

``python stages_cluster_probe.py start <dir>``: starts a two-node ``ray.cluster_utils.Cluster``
(one CPU each, each node with its own RESWEEP_SCRATCH), writes its address to ``<dir>/address``
and waits until ``<dir>/stop`` appears. The study drivers connect to it with ``--address``.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path) -> None:
    # A loaded 2-core machine (another Ray running, the rest of the suite) can take longer than
    # Ray's default wait for a raylet to register; CI failed once on exactly that.
    os.environ.setdefault("RAY_raylet_start_wait_time_s", "180")
    from ray.cluster_utils import Cluster

    from resweep.trainables import runtime  # noqa: F401  (sets Ray's environment defaults)

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "env_vars": {"RESWEEP_SCRATCH": str(folder / "scratch-head")},
                        # its own port: another Ray on this machine may hold the default 8265
                        "include_dashboard": False, "dashboard_port": _free_port()},
    )
    cluster.add_node(num_cpus=1, env_vars={"RESWEEP_SCRATCH": str(folder / "scratch-node2")})
    cluster.wait_for_nodes()
    (folder / "address").write_text(cluster.address)
    try:
        while not (folder / "stop").exists():
            time.sleep(0.5)
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    start(Path(sys.argv[2]))
