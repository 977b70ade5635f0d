"""The artifact store's commit protocol under races and damage, on a local disk and on a real S3
server (moto's, on 127.0.0.1): first writer wins, losers read the winner's bytes, and a file
that does not match the marker's checksums is refused by name."""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import pytest

from resweep.stages.store import COMMIT_FILE, ArtifactCorrupt, ArtifactStore

ROUNDS = 12


def _files(folder: Path, payload: bytes) -> Path:
    folder.mkdir(parents=True)
    (folder / "weights.pt").write_bytes(payload)
    (folder / "sub").mkdir()
    (folder / "sub" / "metrics.json").write_text('{"psnr": 1}')
    return folder


def _digest(folder: Path) -> str:
    return hashlib.sha256((folder / "weights.pt").read_bytes()).hexdigest()


def _race(store_uri: str, key: str, tmp: Path) -> list:
    """Two producers upload different bytes for ``key`` and are released together at the
    marker's creation; returns what each commit returned."""
    barrier = threading.Barrier(2)
    results: list = [None, None]
    errors: list = []

    def producer(i: int) -> None:
        store = ArtifactStore(store_uri)
        real_create = store._create_marker

        def create_at_the_same_moment(k, marker):
            barrier.wait(timeout=60)
            return real_create(k, marker)

        store._create_marker = create_at_the_same_moment  # type: ignore[method-assign]
        real_committed, calls = store.committed, []

        def committed_after_the_early_check(k):  # both pass commit's early check
            calls.append(k)
            return None if len(calls) == 1 else real_committed(k)

        store.committed = committed_after_the_early_check  # type: ignore[method-assign]
        try:
            files = _files(tmp / f"p{i}", f"producer {i} ".encode() * 1000)
            results[i] = store.commit(key, files, {"metrics": {}}, {"kind": "test"})
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=producer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def _check_race(store_uri: str, tmp: Path, list_attempts) -> None:
    for round_ in range(ROUNDS):
        key = f"k{round_:02d}"
        first, second = _race(store_uri, key, tmp / key)
        # both producers end with the same attempt: the marker's
        assert first.marker["attempt"] == second.marker["attempt"]
        marker = ArtifactStore(store_uri).committed(key).marker
        assert marker["attempt"] == first.marker["attempt"]
        assert list_attempts(key) == [marker["attempt"]], "the losing attempt must be deleted"
        digests = {_digest(ArtifactStore(store_uri).fetch(key, tmp / key / f"scratch{i}")) for i in range(2)}
        assert len(digests) == 1 and digests == {marker["files"]["weights.pt"]["sha256"]}


def test_local_commit_race_first_writer_wins(tmp_path):
    store_dir = tmp_path / "store"

    def attempts(key):
        return sorted(p.name for p in (store_dir / "artifacts" / key).glob("attempt-*"))

    _check_race(str(store_dir), tmp_path, attempts)


def test_marker_lists_checksums_and_fetch_refuses_a_truncated_file(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    done = store.commit("key", _files(tmp_path / "f", b"x" * 5000), {}, {"kind": "test"})
    assert done.marker["files"]["weights.pt"] == {
        "sha256": hashlib.sha256(b"x" * 5000).hexdigest(), "size": 5000,
    }
    weights = store.local_dir("key", done.marker["attempt"]) / "weights.pt"
    with open(weights, "r+b") as handle:  # what a power loss before the data reached the disk leaves
        handle.truncate(1000)
    with pytest.raises(ArtifactCorrupt, match="weights.pt has 1000 bytes"):
        ArtifactStore(tmp_path / "store").fetch("key", tmp_path / "scratch")


def test_fetch_refuses_same_size_different_bytes(tmp_path):
    store = ArtifactStore(tmp_path / "store")
    done = store.commit("key2", _files(tmp_path / "f", b"y" * 300), {}, {"kind": "test"})
    (store.local_dir("key2", done.marker["attempt"]) / "sub" / "metrics.json").write_text('{"psnr": 2}')
    with pytest.raises(ArtifactCorrupt, match="sub/metrics.json does not match the sha256"):
        ArtifactStore(tmp_path / "store").fetch("key2", tmp_path / "scratch")


def test_a_marker_without_checksums_still_reads(tmp_path):
    """Artifacts committed before checksums existed stay readable."""
    import json

    store = ArtifactStore(tmp_path / "store")
    done = store.commit("old", _files(tmp_path / "f", b"z"), {}, {"kind": "test"})
    marker_path = tmp_path / "store" / "artifacts" / "old" / COMMIT_FILE
    marker = json.loads(marker_path.read_text())
    del marker["files"]
    marker_path.write_text(json.dumps(marker))
    assert ArtifactStore(tmp_path / "store").fetch("old", tmp_path / "s") == store.local_dir("old", done.marker["attempt"])


# --------------------------------------------------------------------------- S3 (moto)
@pytest.fixture
def s3_storage(monkeypatch, tmp_path):
    """A serial moto server (an atomic conditional PUT, as real S3 has; see moto_s3.py)."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    from moto_s3 import moto_s3_server

    with moto_s3_server(tmp_path, "race", serial=True) as env:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        yield "s3://race/study", boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"])


def test_s3_conditional_put_refuses_a_second_marker(s3_storage):
    storage, client = s3_storage
    store = ArtifactStore(storage)
    path = store._path("direct", COMMIT_FILE)
    assert store._s3_put_if_absent(path, b"first")
    assert not store._s3_put_if_absent(path, b"second")
    body = client.get_object(Bucket="race", Key=path.partition("/")[2])["Body"].read()
    assert body == b"first"


def test_s3_commit_race_first_writer_wins(s3_storage, tmp_path):
    storage, client = s3_storage

    def attempts(key):
        listing = client.list_objects_v2(Bucket="race", Prefix=f"study/artifacts/{key}/")
        names = {o["Key"].split("/")[3] for o in listing.get("Contents", [])}
        return sorted(n for n in names if n.startswith("attempt-"))

    _check_race(storage, tmp_path, attempts)


def test_s3_fetch_verifies_the_download(s3_storage, tmp_path):
    storage, client = s3_storage
    store = ArtifactStore(storage)
    done = store.commit("bad", _files(tmp_path / "f", b"w" * 2048), {}, {"kind": "test"})
    key = f"study/artifacts/bad/{done.marker['attempt']}/weights.pt"
    client.put_object(Bucket="race", Key=key, Body=b"w" * 100)  # a damaged upload
    with pytest.raises(ArtifactCorrupt, match="weights.pt has 100 bytes"):
        store.fetch("bad", tmp_path / "scratch")
    # nothing of a refused download stays in the node cache (its key folder holds no copy)
    assert not list((tmp_path / "scratch" / "bad").iterdir()), "a refused download must not stay in the cache"


def test_two_concurrent_fetches_into_a_node_cache_make_one_verified_copy(s3_storage, tmp_path, monkeypatch):
    """Trials of one node fetching one key at the same moment: one download, one copy in the
    node cache at <key>/<attempt>, and both read bytes that match the marker's sha256."""
    storage, _ = s3_storage
    done = ArtifactStore(storage).commit("shared", _files(tmp_path / "f", b"s" * 4096), {}, {"kind": "test"})
    cache = tmp_path / "node-cache"
    downloads, barrier = [], threading.Barrier(2)
    real_download = ArtifactStore._download

    def slow_download(self, *args):  # the first holds the lock while the second arrives
        downloads.append(args[1])
        time.sleep(0.5)
        return real_download(self, *args)

    monkeypatch.setattr(ArtifactStore, "_download", slow_download)
    folders: list = [None, None]

    def fetch(i: int) -> None:
        barrier.wait(timeout=60)
        folders[i] = ArtifactStore(storage).fetch("shared", cache)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    attempt = done.marker["attempt"]
    assert downloads == [attempt]
    assert folders[0] == folders[1] == cache / "shared" / attempt
    assert sorted(p.name for p in (cache / "shared").iterdir()) == [attempt]  # no second copy, no temp
    assert _digest(folders[0]) == done.marker["files"]["weights.pt"]["sha256"]
    # a copy damaged on the node's disk is refused and fetched again (another process checks it)
    from resweep.stages import store as store_module

    (folders[0] / "weights.pt").write_bytes(b"s" * 10)
    store_module._VERIFIED.clear()
    assert _digest(ArtifactStore(storage).fetch("shared", cache)) == done.marker["files"]["weights.pt"]["sha256"]
    assert len(downloads) == 2
