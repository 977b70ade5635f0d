"""``python tests/ray_node.py start ...``: the ``ray`` command line, for the test clusters of
``isolated_cluster.py``, with two changes that only matter when nodes share one loaded machine:

* ``--node-ip-address=127.0.0.1`` stands (the CLI replaces a loopback address with the
  machine's routable one on Linux);
* the raylet does not die when its dashboard agent is slow to start. Ray 2.60's raylet waits
  a fixed 15 s for the agent to write its listen port to a file; on a 2-core machine under load
  the agent's imports alone take longer. The port is given on the command line
  (``--dashboard-agent-listen-port``), so the file's content is known: it is written as the
  raylet starts (the agent writes the same number when it is up).
"""

from __future__ import annotations

import inspect
import os
import sys

import ray._private.services as services


def _main() -> None:
    services.resolve_ip_for_localhost = lambda host: host
    original = services.start_raylet
    signature = inspect.signature(original)

    def start_raylet(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        port = bound.get("dashboard_agent_listen_port")
        if port:
            path = os.path.join(bound["session_dir"], f"dashboard_agent_listen_port_{bound['node_id']}")
            with open(path, "w") as handle:
                handle.write(str(port))
        return original(*args, **kwargs)

    services.start_raylet = start_raylet
    from ray.scripts.scripts import main

    sys.argv[0] = "ray"
    main()


if __name__ == "__main__":
    _main()
