"""A study on a multi-node Ray cluster whose nodes share nothing but the study's storage.

The head (0 CPUs: nothing of the study runs there) lives in this mount namespace with the
driver; two worker nodes, each with the custom resource ``trial_node`` the study asks for,
run in mount namespaces of their own with a private tmpfs over ``/tmp``, where the driver's
study folder is (``tests/isolated_cluster.py``). The storage is moto's S3 server on
127.0.0.1. An ECO study (teacher + centroids stages) of three variants x two seeds, one
variant of which raises (its ``model.init_from`` file exists on the driver's disk only, as a
path to a laptop file would on a real cluster): the study finishes; the teacher and centroids
are made once; every trial's ``log.txt`` and saved images reach the driver's study folder;
``resweep logs`` shows a trial's log; the report has its comparison crops; the failing
trials' one-line errors appear in the driver's output.

On the same kind of cluster, a driver SIGKILLed mid-study is resumed from yet another mount
namespace, whose study folder is empty, given only the storage URI: no finished trial is lost
or run again, and the storage ends with the whole study.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest
import yaml

from conftest import ROOT, tiny_config_dict
from isolated_cluster import (
    TRIAL_RESOURCE,
    client_env,
    in_own_namespace,
    isolated_cluster,
    why_not_supported,
)
from kill_resume import CLI, kill_driver_when

pytestmark = [pytest.mark.ray, pytest.mark.slow]
pytest.importorskip("moto")
pytest.importorskip("boto3")

BUCKET = "resweep-nodisk"
OBJECTIVE = "eval.demo-eval.psnr_y"


def _study(storage: str, broken_weights: str) -> dict:
    eco_task = {"kind": "sr", "scale": 2, "quantize_input": False}
    teacher = tiny_config_dict(**{"name": "teacher", "task": eco_task, "train.iterations": 3, "eval.sets": []})
    base = tiny_config_dict(**{
        "task": eco_task, "train.iterations": 8, "eval.every": 8, "train.log_every": 4, "eval.save_images": True,
        "methods": {"eco": {"teacher": {"train": teacher}, "ramp_fraction": 0.5}},
    })
    return {
        "name": "eco-nodisk",
        "base": base,
        "storage": storage,
        "variants": [
            {"label": "a", "overrides": {"methods.eco.alpha_start": 0.0}},
            {"label": "b", "overrides": {"methods.eco.alpha_start": 0.5}},
            {"label": "broken", "overrides": {"model.init_from": broken_weights}},
        ],
        "baseline": "a",
        "seeds": [0, 1],
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
        "failure": {"max_failures": 0},
        "resources": {"cpus_per_worker": 1, "custom_resources": {TRIAL_RESOURCE: 1}},
    }


def _s3_files(prefix: str) -> list[str]:
    import pyarrow.fs as pafs

    fs, root = pafs.FileSystem.from_uri(prefix)
    infos = fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
    return sorted(i.path.removeprefix(root + "/") for i in infos if i.type == pafs.FileType.File)


def test_study_on_nodes_that_share_no_disk_relays_logs_errors_and_images(tmp_path, monkeypatch):
    reason = why_not_supported()
    if reason:
        pytest.skip(f"worker nodes need their own mount namespace: {reason}")
    import torch

    from resweep.study.layout import StudyLayout, read_parquet

    from moto_s3 import moto_s3_server

    started = time.monotonic()
    # a safe torch file of another network, on the driver's disk only: preflight (on the driver)
    # accepts it, the trials of the "broken" variant (on worker nodes) cannot read it
    broken_weights = tmp_path / "laptop_only" / "other_network.pt"
    broken_weights.parent.mkdir()
    torch.save({"body.0.weight": torch.zeros(3, 3)}, broken_weights)
    storage = f"s3://{BUCKET}/studies/eco"
    study_dir = tmp_path / "study"
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(_study(storage, str(broken_weights))))

    with moto_s3_server(tmp_path, BUCKET) as s3_env:
        for key, value in s3_env.items():
            monkeypatch.setenv(key, value)
        env = {**os.environ, **s3_env, **client_env(), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
        with isolated_cluster(tmp_path / "nodes", workers=2, cpus_per_worker=1, hide=[str(tmp_path)],
                              env=env) as cluster:
            up = time.monotonic() - started
            driver = subprocess.run(
                [*CLI, "run", str(study_file), "--dir", str(study_dir), "--address", cluster.address],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
            )
            output = driver.stdout + driver.stderr
            assert driver.returncode == 0, output[-4000:] + cluster.log_tail()
        markers = [f for f in _s3_files(storage) if f.endswith("COMMITTED.json")]
    print(f"cluster up in {up:.0f} s; study and checks {time.monotonic() - started - up:.0f} s")

    layout = StudyLayout(study_dir)
    trials = read_parquet(layout.trials).to_pylist()
    by_label = {}
    for row in trials:
        by_label.setdefault(row["label"], []).append(row)
    assert sorted(by_label) == ["a", "b", "broken"] and all(len(rows) == 2 for rows in by_label.values())
    finished = by_label["a"] + by_label["b"]
    assert all(r["status"] == "finished" for r in finished), [(r["label"], r["status"], r["error"]) for r in trials]
    assert all(r["status"] == "errored" for r in by_label["broken"])

    # ---- the teacher and its centroids were made once, on the storage
    artifacts = read_parquet(layout.root / "artifacts.parquet").to_pylist()
    assert sorted(r["kind"] for r in artifacts) == ["eco_centroids", "train"]
    assert all(r["status"] == "produced" for r in artifacts)
    assert len(markers) == 2, markers

    # ---- every trial's log reached the driver's study folder (the trials ran where it is hidden)
    for row in trials:
        log = layout.trial_log(row["trial_id"])
        assert log.is_file(), f"no log.txt on the driver for {row['label']} s{row['seed']}"
        assert f"trial {row['trial_id']}" in log.read_text()
    for row in finished:
        text = layout.trial_log(row["trial_id"]).read_text()
        assert "it 8/8 |" in text, text[-2000:]
        saved = sorted((layout.images / row["trial_id"]).rglob("*.png"))
        assert saved, f"no saved images on the driver for {row['label']} s{row['seed']}"
    assert any((layout.images / "_gt").rglob("*.png")) and any((layout.images / "_baseline").rglob("*.png"))

    # ---- the failing trials: one line each on the driver, the traceback in their relayed logs
    for row in by_label["broken"]:
        lines = [ln for ln in output.splitlines() if "errored:" in ln and row["trial_id"] in ln]
        assert len(lines) == 1, output[-4000:]
        assert str(broken_weights) in lines[0] and f"full log: {layout.trial_log(row['trial_id'])}" in lines[0]
        summary = json.loads(layout.trial_error(row["trial_id"]).read_text())
        assert summary["type"] in lines[0]
        assert "Traceback" in layout.trial_log(row["trial_id"]).read_text()
    assert "Traceback" not in output

    # ---- `resweep logs` shows a trial's log; the report has its comparison crops
    shown = subprocess.run([*CLI, "logs", str(study_dir), finished[0]["trial_id"]], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0 and "it 8/8 |" in shown.stdout, shown.stdout[-2000:] + shown.stderr[-2000:]
    report = subprocess.run([*CLI, "report", str(study_dir)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=600)
    assert report.returncode == 0, report.stdout[-3000:] + report.stderr[-3000:]
    dashboard = (study_dir / "report" / "index.html").read_text()
    assert 'class="crops"' in dashboard and "data:image/png;base64," in dashboard


def _stored_trials(storage: str, into) -> list[dict]:
    """The rows of trials.parquet as the storage holds them ([] before the first mirror)."""
    import shutil

    from resweep.study.layout import read_parquet
    from resweep.study.mirror import fetch_study

    shutil.rmtree(into, ignore_errors=True)
    try:
        folder = fetch_study(storage, into, only=["trials.parquet"])
    except Exception:  # nothing mirrored yet
        return []
    return read_parquet(folder / "trials.parquet").to_pylist() if (folder / "trials.parquet").is_dir() else []


def test_driver_killed_on_the_cluster_resumes_from_another_namespace_given_only_the_storage(tmp_path, monkeypatch):
    reason = why_not_supported()
    if reason:
        pytest.skip(f"drivers and worker nodes need their own mount namespace: {reason}")
    from resweep.study.mirror import fetch_study
    from resweep.study.results import LOST_TRIAL_ERROR, read_trials

    from moto_s3 import moto_s3_server

    storage = f"s3://{BUCKET}/studies/resumed"
    base = tiny_config_dict(**{"train.iterations": 16, "eval.every": 8, "train.log_every": 4})
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump({
        "name": "resumed", "base": base, "storage": storage,
        "variants": [{"label": "lr4e-3", "overrides": {"optim.lr": 4e-3}},
                     {"label": "lr1e-3", "overrides": {"optim.lr": 1e-3}},
                     {"label": "lr3e-4", "overrides": {"optim.lr": 3e-4}}],
        "seeds": [0, 1],
        "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "budget": {"max_concurrent": 2},
        "resources": {"cpus_per_worker": 1, "custom_resources": {TRIAL_RESOURCE: 1}},
    }))
    study_dir = tmp_path / "study"
    started = time.monotonic()
    with moto_s3_server(tmp_path, BUCKET) as s3_env:
        for key, value in s3_env.items():
            monkeypatch.setenv(key, value)
        env = {**os.environ, **s3_env, **client_env(), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
               "RESWEEP_MIRROR_INTERVAL_S": "2"}
        with isolated_cluster(tmp_path / "nodes", workers=2, cpus_per_worker=1, hide=[str(tmp_path)],
                              env=env) as cluster:
            probe = tmp_path / "probe"
            # killed once the STORAGE shows two finished trials (the driver's disk is not looked at)
            kill_driver_when(study_file, study_dir,
                             lambda _: sum(r["status"] == "finished" for r in _stored_trials(storage, probe)) >= 2,
                             extra_args=["--address", cluster.address], env=env, timeout_s=900)
            snapshot = fetch_study(storage, tmp_path / "snapshot")
            before = {r["trial_id"]: r for r in read_trials(snapshot)}
            finished = {t for t, r in before.items() if r["status"] == "finished"}
            assert len(finished) >= 2

            # another machine: its own mount namespace, where the driver's folder (all of /tmp,
            # the study folder included) is an empty tmpfs; it is given the storage URI only. It
            # drives through the head's raylet (whose session folder it sees, as a driver started
            # on the head node would): nodes that share an address cannot be told apart by Ray
            resumer = subprocess.run(
                in_own_namespace([*CLI, "resume", storage, "--dir", str(study_dir), "--address", cluster.address],
                                 hide=[str(tmp_path)], keep=[cluster.head_temp]),
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200,
            )
            output = resumer.stdout + resumer.stderr
            assert resumer.returncode == 0, output[-4000:] + cluster.log_tail()
            assert "fetching study 'resumed'" in output
        print(f"kill and resume on the isolated cluster: {time.monotonic() - started:.0f} s")

        # what the resumed driver wrote reached the storage (its own folder went with its namespace)
        final = fetch_study(storage, tmp_path / "final")
    after = {r["trial_id"]: r for r in read_trials(final)}
    lost = {t for t, r in after.items() if r.get("error") == LOST_TRIAL_ERROR}
    assert finished.isdisjoint(lost)
    kept = {t: r for t, r in after.items() if t not in lost}
    assert len(kept) == 6 and all(r["status"] == "finished" for r in kept.values()), \
        {t: (r["status"], r.get("error")) for t, r in after.items()}
    assert sorted((r["label"], r["seed"]) for r in kept.values()) == sorted(
        (label, seed) for label in ("lr4e-3", "lr1e-3", "lr3e-4") for seed in (0, 1))
    for tid in finished:  # not lost, not run again
        assert after[tid]["started_at"] == before[tid]["started_at"]
        assert after[tid][f"final.{OBJECTIVE}"] == before[tid][f"final.{OBJECTIVE}"]
    for tid in kept:  # every kept trial's log reached the storage through the driver that ran it
        assert f"trial {tid}" in (final / "trials" / tid / "log.txt").read_text()
