"""moto's S3 server on 127.0.0.1 as a pytest fixture (a real server over HTTP, not a mock).

Use it with ``from s3_server import BUCKET, s3_server``: the fixture starts the server, points
every AWS client at it through the environment (``AWS_ENDPOINT_URL`` and test credentials, the
way MinIO users give an endpoint), creates :data:`BUCKET`, and yields the endpoint URL."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time

import pytest

BUCKET = "resweep-test"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def s3_server(monkeypatch, tmp_path):
    """moto's S3 server on 127.0.0.1, given to everything the way MinIO users give an endpoint."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    port = free_port()
    log = open(tmp_path / "moto.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(100):
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        time.sleep(0.1)
    env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.terminate()
    server.wait(timeout=10)
    log.close()
