"""moto's S3 server on 127.0.0.1: a real S3 endpoint over HTTP (not a mock), shared by every
process of a test (drivers, Ray nodes) the way MinIO users give one: ``AWS_ENDPOINT_URL`` and
test credentials.

:func:`moto_s3_server` starts one (``serial=True``: one request at a time, see below) and yields
the environment that points clients at it; the ``s3_server`` fixture does the same for a test
(``from moto_s3 import BUCKET, s3_server``), setting that environment and yielding the endpoint.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

BUCKET = "resweep-test"

# moto's stock server is threaded and checks If-None-Match, then stores, without a lock; AWS S3
# and MinIO make the conditional write atomic. The serial server handles one request at a time,
# so a commit race tests resweep's protocol against an atomic conditional PUT, as real S3 has.
_SERIAL_MOTO = """
import sys
from werkzeug.serving import run_simple
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
run_simple("127.0.0.1", int(sys.argv[1]), DomainDispatcherApplication(create_backend_app), threaded=False)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def moto_s3_server(log_dir: Path, bucket: str = BUCKET, *, serial: bool = False) -> Iterator[dict[str, str]]:
    """Start the server, create ``bucket``; yields the environment that points clients at it."""
    port = free_port()
    argv = ([sys.executable, "-c", _SERIAL_MOTO, str(port)] if serial
            else [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
    log = open(Path(log_dir) / "moto.log", "wb")  # noqa: SIM115
    server = subprocess.Popen(argv, stdout=log, stderr=log)
    try:
        for _ in range(300):
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if server.poll() is not None:
                raise RuntimeError(f"moto's server exited at start; see {log_dir}/moto.log")
            time.sleep(0.1)
        endpoint = f"http://127.0.0.1:{port}"
        env = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
        import boto3

        boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test", aws_secret_access_key="test",
                     region_name="us-east-1").create_bucket(Bucket=bucket)
        yield env
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


@pytest.fixture
def s3_server(monkeypatch, tmp_path) -> Iterator[str]:
    """moto's S3 server with :data:`BUCKET`, given to everything through the environment."""
    pytest.importorskip("moto")
    pytest.importorskip("boto3")
    with moto_s3_server(tmp_path, BUCKET) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield env["AWS_ENDPOINT_URL"]
