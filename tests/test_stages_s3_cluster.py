"""Stages and S3-compatible storage on a two-node Ray cluster.

A real S3 server (moto's, on 127.0.0.1) is the study's storage and the ONLY place the nodes
share: a ``ray.cluster_utils.Cluster`` with two nodes (one CPU each, so two concurrent trials
land on both), each node with a scratch folder (and artifact cache) of its own. An ECO sweep
of 4 trials trains its teacher once, every trial reads the same centroids artifact, and ``artifacts.parquet``
says so. The driver is SIGKILLed after the first trial finished and ``resweep resume``
continues from the S3 storage; ``resweep report`` then works from a local copy of it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
import pytest
import yaml

from resweep.study.results import LOST_TRIAL_ERROR

from conftest import ROOT, tiny_config_dict
from kill_resume import CLI, kill_driver_when, resume
from moto_s3 import BUCKET

pytestmark = pytest.mark.ray
pytest.importorskip("moto")
pytest.importorskip("boto3")

OBJECTIVE = "eval.demo-eval.psnr_y"


def _s3_files(prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(prefix)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path.removeprefix(root + "/") for i in infos if i.type == pafs.FileType.File)


def _s3_table(prefix: str, name: str) -> list[dict]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(prefix)
    return pq.read_table(f"{root}/{name}", filesystem=fs).to_pylist()


def _eco_study(storage: str) -> dict:
    eco_task = {"kind": "sr", "scale": 2, "quantize_input": False}
    teacher = tiny_config_dict(**{"name": "teacher", "task": eco_task, "train.iterations": 3, "eval.sets": []})
    base = tiny_config_dict(**{
        "task": eco_task, "train.iterations": 16, "eval.every": 8, "train.log_every": 8,
        "methods": {"eco": {"teacher": {"train": teacher}, "ramp_fraction": 0.5}},
    })
    return {
        "name": "eco-s3",
        "base": base,
        "storage": storage,
        "space": {"methods.eco.alpha_start": {"type": "grid", "values": [0.0, 0.5]}},
        "seeds": [0, 1],
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
    }


@pytest.mark.slow
def test_eco_sweep_on_two_nodes_with_s3_storage_resumes_and_reports(s3_server, tmp_path, monkeypatch):
    storage = f"s3://{BUCKET}/studies/eco"
    monkeypatch.setenv("RESWEEP_SCRATCH", str(tmp_path / "scratch-driver"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    cluster = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "stages_cluster_probe.py"), "start", str(tmp_path)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "address").exists():
            assert cluster.poll() is None, cluster.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the test cluster did not start"
            time.sleep(0.5)
        address = (tmp_path / "address").read_text()
        study_file = tmp_path / "study.yaml"
        study_file.write_text(yaml.safe_dump(_eco_study(storage)))
        study_dir = tmp_path / "study"
        address_args = ["--address", address]

        # ---- run, SIGKILL the driver once a trial finished, resume from the S3 storage
        before = kill_driver_when(study_file, study_dir, lambda rows: any(r["status"] == "finished" for r in rows),
                                  extra_args=address_args, env=env, timeout_s=500)
        finished_before = {t for t, r in before.items() if r["status"] == "finished"}
        assert 1 <= len(finished_before) < 4
        markers_before = {
            f: json.loads(_read_s3(storage, f)) for f in _s3_files(storage) if f.endswith("COMMITTED.json")
        }
        assert len(markers_before) == 2  # the teacher (train) and its centroids
        resume(study_dir, extra_args=address_args, env=env)
    finally:
        (tmp_path / "stop").write_text("")
        try:
            cluster.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cluster.pid, signal.SIGKILL)

    # ---- everything landed in S3: trials' checkpoints, artifacts, the study's Parquet files
    files = _s3_files(storage)
    for name in ("artifacts.parquet", "study.json", "study.yaml"):
        assert name in files, name
    for folder in ("trials.parquet", "curves.parquet", "per_image.parquet"):  # folders of parts
        assert any(f.startswith(folder + "/") and f.endswith(".parquet") for f in files), folder
    assert any(f.startswith("tune/") and "/checkpoint_" in f for f in files)
    all_trials = _s3_table(storage, "trials.parquet")
    # a trial started after Tune's last experiment checkpoint is errored as lost, its point rerun
    lost = {r["trial_id"] for r in all_trials if r["error"] == LOST_TRIAL_ERROR}
    assert len(lost) <= 2 and all(r["status"] == "errored" for r in all_trials if r["trial_id"] in lost)
    trials = [r for r in all_trials if r["trial_id"] not in lost]
    assert len(trials) == 4 and all(r["status"] == "finished" for r in trials), [r["status"] for r in trials]
    by_id = {r["trial_id"]: r for r in trials}
    for tid in finished_before:  # kept, not rerun
        assert by_id[tid]["started_at"] == before[tid]["started_at"]

    # ---- the teacher was trained once, every trial read the same centroids
    artifacts = _s3_table(storage, "artifacts.parquet")
    assert sorted(r["kind"] for r in artifacts) == ["eco_centroids", "train"]
    assert all(r["status"] == "produced" for r in artifacts)
    centroids = next(r for r in artifacts if r["kind"] == "eco_centroids")
    teacher = next(r for r in artifacts if r["kind"] == "train")
    assert teacher["metric.iteration"] == 3
    markers_after = {f: json.loads(_read_s3(storage, f)) for f in files if f.endswith("COMMITTED.json")}
    assert markers_after == markers_before  # resume recomputed nothing
    assert {json.loads(r["artifacts"])["eco.centroids"] for r in trials} == {centroids["key"]}

    # ---- each node that ran trials fetched it once, into its own artifact cache (not the
    # driver's) at <key>/<attempt>, shared by its trials; no trial's scratch folder stays
    attempt = next(m["attempt"] for m in markers_after.values() if m["key"] == centroids["key"])
    fetched = {}
    for node in ("scratch-head", "scratch-node2"):
        copies = sorted(p.name for p in (tmp_path / node / "artifacts" / centroids["key"]).glob("*")
                        if p.is_dir())
        if copies:
            assert copies == [attempt], (node, copies)
            fetched[node] = node
        assert not list((tmp_path / node / "trials").glob("*")), f"{node}: a trial's scratch stayed"
    # Which node runs which trial is Ray's choice: a trial of the killed driver can hold the
    # head's CPU for a while after the kill, and the resumed trials then all run on node2 (CI
    # saw it). Every fetch came from S3 either way: each node's cache starts empty.
    assert fetched
    assert not (tmp_path / "scratch-driver").exists()

    # ---- `resweep report` works from a copy of the storage
    import pyarrow.fs as pafs

    copy = tmp_path / "copy"
    fs, root = pafs.FileSystem.from_uri(storage)
    pafs.copy_files(root, str(copy), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
    report = subprocess.run([*CLI, "report", str(copy)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    dashboard = (copy / "report" / "index.html").read_text()
    assert centroids["key"] in dashboard and teacher["key"] in dashboard


def _read_s3(prefix: str, name: str) -> str:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(prefix)
    with fs.open_input_stream(f"{root}/{name}") as f:
        return f.read().decode()


def test_s3_commit_marker_first_writer_wins_and_partial_uploads_are_never_read(s3_server, tmp_path):
    """S3 has no lock: two producers of one key may both upload; the first marker wins, the
    loser's attempt and a killed producer's are deleted, readers only ever read the committed
    attempt."""
    from resweep.stages import ArtifactStore

    store = ArtifactStore(f"s3://{BUCKET}/race")
    key = "test-0123456789abcdef"
    for name, value in (("a", 1), ("b", 2)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "values.json").write_text(json.dumps([value]))
    # a producer killed after uploading, before its marker: nothing is committed
    stale = store.fs.open_output_stream(f"{store.root}/{key}/attempt-killed/values.json")
    stale.write(b"[99]")
    stale.close()
    assert store.committed(key) is None
    with pytest.raises(FileNotFoundError, match="not committed"):
        store.fetch(key, tmp_path / "scratch")

    first = store.commit(key, tmp_path / "a", {"metrics": {"v": 1.0}}, {"kind": "test"})
    second = store.commit(key, tmp_path / "b", {"metrics": {"v": 2.0}}, {"kind": "test"})
    assert second.marker["attempt"] == first.marker["attempt"] and second.metrics == {"v": 1.0}
    folder = store.fetch(key, tmp_path / "scratch")
    assert json.loads((folder / "values.json").read_text()) == [1]
    assert folder == tmp_path / "scratch" / key / first.marker["attempt"]  # the node cache's copy
    attempts = {f.split("/")[2] for f in _s3_files(f"s3://{BUCKET}/race") if "/attempt-" in f}
    # the winner removed the killed producer's attempt, and the loser (b) deleted its own
    assert attempts == {first.marker["attempt"]}
    # a second fetch on this node reuses the download
    (folder / "values.json").write_text("[1]")
    assert store.fetch(key, tmp_path / "scratch") == folder
