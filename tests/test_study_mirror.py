"""A study with remote storage is mirrored there as it runs and resumes from the storage alone.

moto's S3 server on 127.0.0.1 (a real server over HTTP) is the storage. The endpoint is given
in the storage URI's query (``?endpoint_override=...&scheme=http``), with ``AWS_ENDPOINT_URL``
removed, so every place that appends to the storage must keep the query at the end.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from resweep.study.layout import chunk_name, read_parquet
from resweep.uri import join_uri

from conftest import ROOT, tiny_config_dict
from kill_resume import CLI, driver_env, kill_driver_when, resume
from moto_s3 import BUCKET

OBJECTIVE = "eval.demo-eval.psnr_y"
QUERY = "endpoint_override=127.0.0.1:{port}&scheme=http"


def _storage(endpoint: str, prefix: str, monkeypatch) -> str:
    # the endpoint only in the URI: a path appended after the query would reach the wrong place
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    return f"s3://{BUCKET}/{prefix}?" + QUERY.format(port=endpoint.rsplit(":", 1)[1])


def _remote_files(storage: str) -> set[str]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(storage)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path.removeprefix(root + "/") for i in infos if i.type == pafs.FileType.File}


# --------------------------------------------------------------------------- (a) URIs
@pytest.mark.parametrize(("base", "parts", "expected"), [
    ("s3://b/studies/x?endpoint_override=127.0.0.1:9000&scheme=http", ("tune",),
     "s3://b/studies/x/tune?endpoint_override=127.0.0.1:9000&scheme=http"),
    ("s3://b/studies/x/?region=eu-west-1", ("artifacts", "k1/"), "s3://b/studies/x/artifacts/k1?region=eu-west-1"),
    ("s3://b", ("train_runs",), "s3://b/train_runs"),
    ("gs://b/p", ("a", "b.parquet"), "gs://b/p/a/b.parquet"),
    ("/data/studies/x", ("tune",), "/data/studies/x/tune"),
])
def test_join_uri_keeps_the_query_at_the_end(base, parts, expected):
    assert join_uri(base, *parts) == expected


def test_trial_settings_append_to_the_storage_before_its_query(tmp_path):
    from resweep.study.layout import StudyLayout
    from resweep.study.spec import study_from_dict
    from resweep.study.tuner import trial_settings

    study = study_from_dict({"name": "q", "base": tiny_config_dict(),
                             "objectives": [{"metric": OBJECTIVE, "mode": "max"}]})
    storage = "s3://b/studies/q?endpoint_override=127.0.0.1:9000&scheme=http"
    settings = trial_settings(study, StudyLayout(tmp_path), storage)
    assert settings.train_storage == "s3://b/studies/q/train_runs?endpoint_override=127.0.0.1:9000&scheme=http"


# --------------------------------------------------------------------------- the mirror itself
def _part(path: Path, trial_ids: list[str], status: str = "running") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"trial_id": trial_ids, "status": [status] * len(trial_ids)}), path)


def _study_folder(root: Path) -> None:
    (root / "study.yaml").parent.mkdir(parents=True)
    (root / "study.yaml").write_text("name: m\n")
    (root / "study.json").write_text('{"name": "m"}')
    for tid in ("t1", "t2"):
        _part(root / "trials.parquet" / f"{tid}.parquet", [tid])
        _part(root / "curves.parquet" / f"{tid}.parquet", [tid])
        (root / "trials" / tid).mkdir(parents=True)
        (root / "trials" / tid / "log.txt").write_text(f"{tid} line 1\n")
    (root / "images" / "t1" / "set").mkdir(parents=True)
    (root / "images" / "t1" / "set" / "a.png").write_bytes(b"png-t1")
    (root / "images" / "_gt" / "set").mkdir(parents=True)
    (root / "images" / "_gt" / "set" / "a.png").write_bytes(b"png-gt")
    (root / "trials.parquet" / ".t3.parquet-x1.tmp").write_bytes(b"half")  # an atomic write under way
    (root / "tune").mkdir()  # Ray Tune's own folder is in the storage already: never mirrored
    (root / "tune" / "experiment_state.json").write_text("{}")
    (root / "cache").mkdir()
    (root / "cache" / "big.bin").write_bytes(b"0" * 100)
    (root / "driver.lock").write_text("")


MIRRORED = {
    "study.yaml", "study.json", "trials.parquet/t1.parquet", "trials.parquet/t2.parquet",
    "curves.parquet/t1.parquet", "curves.parquet/t2.parquet", "trials/t1/log.txt", "trials/t2/log.txt",
    "images/t1/set/a.png", "images/_gt/set/a.png",
}


def test_mirror_uploads_only_what_changed_deletes_moved_parts_and_copies_optuna_db(
        s3_server, tmp_path, monkeypatch, capsys):
    from resweep.study.mirror import StudyMirror, fetch_study

    storage = _storage(s3_server, "studies/m", monkeypatch)
    root = tmp_path / "m"
    _study_folder(root)
    # optuna.db with a connection that keeps writing (the searcher's): copied through sqlite's backup
    db = sqlite3.connect(root / "optuna.db")
    db.execute("create table trials (number integer, state text)")
    db.executemany("insert into trials values (?, ?)", [(0, "COMPLETE"), (1, "RUNNING")])
    db.commit()

    mirror = StudyMirror(root, storage, interval_s=3600)
    uploads: list[str] = []
    real_upload = mirror._upload
    monkeypatch.setattr(mirror, "_upload", lambda rel: (uploads.append(rel), real_upload(rel)))
    mirror.trial_active("t1")
    mirror.trial_active("t2")
    assert mirror.sync()
    assert _remote_files(storage) == MIRRORED | {"optuna.db"}
    assert sorted(uploads) == sorted(MIRRORED)

    uploads.clear()
    assert mirror.sync()
    assert uploads == []  # nothing changed: nothing sent, optuna.db included

    # t2 ended and is settled after one more look; t1 still runs and its log grows
    mirror.trial_ended("t2")
    assert mirror.sync()
    with open(root / "trials" / "t1" / "log.txt", "a") as f:
        f.write("t1 line 2\n")
    with open(root / "trials" / "t2" / "log.txt", "a") as f:
        f.write("t2 written after its end\n")  # a settled trial's folder is not looked at again
    db.execute("update trials set state = 'COMPLETE' where number = 1")
    db.commit()
    uploads.clear()
    assert mirror.sync()
    assert uploads == ["trials/t1/log.txt"]

    # ended trials' own parts move into a chunk (written first, then the parts removed)
    _part(root / "trials.parquet" / chunk_name(0), ["t1", "t2"], status="finished")
    for tid in ("t1", "t2"):
        (root / "trials.parquet" / f"{tid}.parquet").unlink()
    mirror.trial_ended("t1")
    mirror.close()  # the last sync looks at everything, settled folders included
    remote = _remote_files(storage)
    assert {p for p in remote if p.startswith("trials.parquet/")} == {f"trials.parquet/{chunk_name(0)}"}

    fetched = fetch_study(storage, tmp_path / "fetched")
    assert {p.relative_to(fetched).as_posix() for p in fetched.rglob("*") if p.is_file()} == remote
    assert (fetched / "trials" / "t2" / "log.txt").read_text() == (root / "trials" / "t2" / "log.txt").read_text()
    assert read_parquet(fetched / "trials.parquet").to_pylist() == read_parquet(root / "trials.parquet").to_pylist()
    copy = sqlite3.connect(fetched / "optuna.db")
    assert copy.execute("select number, state from trials order by number").fetchall() == [
        (0, "COMPLETE"), (1, "COMPLETE")]
    copy.close()
    db.close()

    # a new driver (resumed): a part the storage holds that its folder no longer has is removed
    import pyarrow.fs as pafs

    fs, prefix = pafs.FileSystem.from_uri(storage)
    with fs.open_output_stream(f"{prefix}/curves.parquet/t9.parquet") as out:
        out.write(b"stale")
    assert StudyMirror(root, storage).sync()
    assert "curves.parquet/t9.parquet" not in _remote_files(storage)
    assert capsys.readouterr().err == ""


def test_a_sync_looks_at_the_same_files_with_2_or_42_ended_trials(s3_server, tmp_path, monkeypatch):
    from resweep.study.mirror import StudyMirror

    root = tmp_path / "m"
    _study_folder(root)
    mirror = StudyMirror(root, _storage(s3_server, "flat", monkeypatch))
    looked: list[Path] = []
    real = mirror._if_changed
    monkeypatch.setattr(mirror, "_if_changed", lambda path: (looked.append(path), real(path))[1])

    def looked_at_by_a_sync() -> int:
        looked.clear()
        assert mirror.sync()
        return len(looked)

    for tid in ("t1", "t2"):
        mirror.trial_active(tid)
        mirror.trial_ended(tid)
    looked_at_by_a_sync()  # their folders' last look
    with_two = looked_at_by_a_sync()
    for i in range(40):
        tid = f"e{i}"
        mirror.trial_active(tid)
        (root / "trials" / tid).mkdir()
        (root / "trials" / tid / "log.txt").write_text("x\n")
        (root / "images" / tid).mkdir()
        (root / "images" / tid / "a.png").write_bytes(b"png")
        mirror.trial_ended(tid)
    assert looked_at_by_a_sync() == with_two + 80  # the 40 new trials' last look
    assert looked_at_by_a_sync() == with_two


def test_mirror_failures_are_warned_once_and_retried(s3_server, tmp_path, monkeypatch, capsys):
    import boto3

    from resweep.study.mirror import StudyMirror

    boto3.client("s3", endpoint_url=s3_server).list_buckets()  # the server is up
    storage = _storage(s3_server, "x", monkeypatch).replace(BUCKET, "not-made-yet", 1)
    root = tmp_path / "m"
    _study_folder(root)
    mirror = StudyMirror(root, storage)
    assert not mirror.sync()
    assert not mirror.sync()
    err = capsys.readouterr().err
    assert err.count("could not mirror the study folder") == 1, err
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket="not-made-yet")
    assert mirror.sync()  # everything retried
    assert _remote_files(storage) == MIRRORED


# --------------------------------------------------------------------------- a real study
def _remote_state(storage: str, tmp: Path) -> tuple[list[dict], list[tuple]]:
    """(rows of the mirrored trials.parquet, (number, state, lr) of the mirrored optuna.db)."""
    from resweep.study.mirror import fetch_study

    shutil.rmtree(tmp, ignore_errors=True)
    try:
        folder = fetch_study(storage, tmp, only=["trials.parquet", "optuna.db"])
    except Exception:  # nothing mirrored yet
        return [], []
    rows = read_parquet(folder / "trials.parquet").to_pylist() if (folder / "trials.parquet").is_dir() else []
    optuna = []
    if (folder / "optuna.db").is_file():
        db = sqlite3.connect(folder / "optuna.db")
        with contextlib.suppress(sqlite3.OperationalError):  # the searcher made no table yet
            optuna = db.execute(
                "select t.number, t.state, p.param_value from trials t join trial_params p "
                "on p.trial_id = t.trial_id where p.param_name = 'optim.lr'"
            ).fetchall()
        db.close()
    return rows, optuna


@pytest.mark.slow
@pytest.mark.ray
def test_killed_driver_study_resumes_from_the_storage_alone(s3_server, tmp_path, monkeypatch):
    storage = _storage(s3_server, "studies/mirrored", monkeypatch)
    base = tiny_config_dict(**{"train.iterations": 16, "eval.every": 8, "train.log_every": 8,
                               "eval.save_images": True})
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "mirrored",
        "base": base,
        "storage": storage,
        "space": {"optim.lr": {"type": "loguniform", "low": 1e-4, "high": 3e-3}},
        "seeds": [0],
        "search": {"algorithm": "optuna_tpe", "num_samples": 4, "seed": 0, "optuna_storage": "sqlite"},
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
    }))
    study_dir = tmp_path / "study"
    env = driver_env()
    probe = tmp_path / "probe"

    def storage_has_two_finished(_local_rows: list[dict]) -> bool:
        rows, optuna = _remote_state(storage, probe)
        return (sum(r["status"] == "finished" for r in rows) >= 2
                and sum(state == "COMPLETE" for _, state, _ in optuna) >= 2)

    # killed mid-study once the STORAGE (not the local folder) shows two finished trials: before
    # this change nothing reached it until the study ended, and optuna.db never
    kill_driver_when(study_file, study_dir, storage_has_two_finished, env=env)

    from resweep.study.mirror import fetch_study

    snapshot = fetch_study(storage, tmp_path / "snapshot")
    before = {r["trial_id"]: r for r in read_parquet(snapshot / "trials.parquet").to_pylist()}
    finished = {t for t, r in before.items() if r["status"] == "finished"}
    assert len(finished) >= 2 and (snapshot / "study.json").is_file() and (snapshot / "study.yaml").is_file()
    curves = read_parquet(snapshot / "curves.parquet").to_pandas()
    for tid in finished:
        assert (snapshot / "trials" / tid / "log.txt").stat().st_size > 0
        assert list(curves.loc[curves.trial_id == tid, "iteration"]) == [8, 16]
        assert any((snapshot / "images" / tid).rglob("*.png")), f"no saved images of {tid} in the storage"
    _, optuna = _remote_state(storage, probe)
    complete_lrs = {lr for _, state, lr in optuna if state == "COMPLETE"}
    assert len(complete_lrs) >= 2
    assert complete_lrs <= {r["param.optim.lr"] for r in before.values()}  # the same trials

    # the machine is gone: nothing local survives; resume from the storage URI alone
    shutil.rmtree(study_dir)
    resumed = resume(storage, extra_args=["--dir", str(study_dir)], env=env)
    assert "fetching study 'mirrored'" in resumed.stdout

    from resweep.study.results import LOST_TRIAL_ERROR, read_trials

    after = {r["trial_id"]: r for r in read_trials(study_dir)}
    lost = {t for t, r in after.items() if r.get("error") == LOST_TRIAL_ERROR}
    assert finished.isdisjoint(lost)
    kept = {t: r for t, r in after.items() if t not in lost}
    assert len(kept) == 4 and all(r["status"] == "finished" for r in kept.values()), \
        {t: r["status"] for t, r in after.items()}
    for tid in finished:  # not lost, not run again
        assert after[tid]["started_at"] == before[tid]["started_at"]
        assert after[tid][f"final.{OBJECTIVE}"] == before[tid][f"final.{OBJECTIVE}"]
    curves = read_parquet(study_dir / "curves.parquet").to_pandas()
    for tid in kept:
        assert list(curves.loc[curves.trial_id == tid, "iteration"]) == [8, 16], tid

    # the storage ends with the resumed study's files: status and report read it from there
    remote_rows, _ = _remote_state(storage, probe)
    assert sorted((r["trial_id"], r["status"]) for r in remote_rows) == \
        sorted((t, r["status"]) for t, r in after.items())
    status = subprocess.run([*CLI, "status", storage], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=120)
    assert status.returncode == 0 and "mirrored" in status.stdout, status.stdout + status.stderr
    report = subprocess.run([*CLI, "report", storage], cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    assert (tmp_path / "reports" / "mirrored" / "index.html").is_file()
