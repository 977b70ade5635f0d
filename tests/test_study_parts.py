"""The study's datasets as folders of parts: a trial's own part while it runs, chunks of ended
trials, one chunk after the experiment's compaction; and studies written before parts existed
(one file per dataset) still read, report and resume."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from resweep.study import results as results_module
from resweep.study.layout import StudyLayout, list_parts, read_parquet
from resweep.study.results import StudyResults, best_trial, count_statuses, read_trials

OBJECTIVE = "eval.Set5.psnr_y"
META = {"name": "parts", "knobs": ["optim.lr"], "seeds": [0], "objectives": [{"metric": OBJECTIVE, "mode": "max"}],
        "variants": [], "iterations": 8, "total_trials": None, "task": {"kind": "sr", "scale": 2}}


def _run_trial(results: StudyResults, tid: str, lr: float, psnr: float, *, end: str = "finished") -> None:
    results.trial_started(tid, "", 0, {"optim.lr": lr}, {"optim": {"lr": lr}, "train": {"iterations": 8}})
    for it in (4, 8):
        per_image = [{"iteration": it, "set": "Set5", "image": f"im{k}.png", "psnr_y": psnr + k} for k in range(2)]
        results.trial_result(tid, {"iteration": it, OBJECTIVE: psnr - 8 + it, "per_image": json.dumps(per_image)})
    if end == "errored":
        results.trial_errored(tid, "RuntimeError: boom")
    else:
        results.trial_completed(tid, {"status": "finished"}, total_iterations=8)


def test_driver_holds_only_open_trials_and_chunks_read_as_one_dataset(tmp_path, monkeypatch):
    monkeypatch.setattr(results_module, "CHUNK_TRIALS", 3)
    results = StudyResults(tmp_path, meta=dict(META))
    results.write_meta()
    expected = {}
    for i in range(8):
        psnr = 30 + (i * 3 % 8) * 0.5
        _run_trial(results, f"t{i}", 10.0 ** -(i + 1), psnr, end="errored" if i == 5 else "finished")
        expected[f"t{i}"] = ("errored" if i == 5 else "finished", psnr)
        assert len(results.trials) < 3  # never more than a chunk's worth of ended trials in memory
    layout = StudyLayout(tmp_path)
    names = [p.name for p in list_parts(layout.trials)]
    assert "chunk~000000.parquet" in names and "chunk~000001.parquet" in names  # 2 x 3 trials moved
    rows = {r["trial_id"]: r for r in read_trials(tmp_path)}
    assert {t: (r["status"], r[f"best.{OBJECTIVE}"]) for t, r in rows.items()} == expected
    # the driver's summary equals one computed from the rows on disk
    assert results.counts() == count_statuses(rows.values())
    assert results.best(OBJECTIVE, "max")["trial_id"] == best_trial(rows.values(), OBJECTIVE, "max")["trial_id"]

    # t5 errored and is moved to a chunk; resumed, it is rewritten whole in its own part, whose
    # row wins over the chunk's; its curve keeps the reports before the checkpoint
    results.trial_started("t5", "", 0, {"optim.lr": 1e-6}, {"optim": {"lr": 1e-6}, "train": {"iterations": 8}})
    results.trial_result("t5", {"iteration": 8, OBJECTIVE: 40.0})
    results.trial_completed("t5", {"status": "finished"}, total_iterations=8)
    results.flush(force=True)
    rows = {r["trial_id"]: r for r in read_trials(tmp_path)}
    assert len(rows) == 8 and rows["t5"]["status"] == "finished" and rows["t5"][f"best.{OBJECTIVE}"] == 40.0
    curves = read_parquet(layout.curves).to_pandas()
    assert sorted(curves.query("trial_id == 't5'")["iteration"]) == [4, 8]
    assert len(curves) == 16 and not curves.duplicated(["trial_id", "iteration"]).any()
    assert results.best(OBJECTIVE, "max")["trial_id"] == "t5"

    # the end of the experiment: one chunk per dataset, which plain pyarrow reads too
    before = {n: read_parquet(tmp_path / n).sort_by("trial_id").to_pylist()
              for n in ("trials.parquet", "curves.parquet", "per_image.parquet")}
    results.compact()
    for name, rows_before in before.items():
        parts = list_parts(tmp_path / name)
        assert len(parts) == 1 and parts[0].name.startswith("chunk~")
        after = pq.read_table(tmp_path / name).sort_by("trial_id").to_pylist()
        assert [{k: v for k, v in r.items() if v is not None} for r in after] == \
               [{k: v for k, v in r.items() if v is not None} for r in rows_before]
    # 8 trials x 2 evaluations x 2 images: t5's report at 8 without per-image rows keeps its old ones
    assert len(read_parquet(layout.per_image)) == 8 * 2 * 2

    # a new driver (resume) holds no ended trial's rows
    again = StudyResults(tmp_path)
    assert again.trials == {} and again.counts() == count_statuses(read_trials(tmp_path))


def test_a_reader_takes_a_trials_own_part_over_chunks_and_the_newest_chunk(tmp_path):
    folder = tmp_path / "trials.parquet"
    folder.mkdir()
    pq.write_table(pa.table({"trial_id": ["a", "b"], "v": [1, 1]}), folder / "chunk~000000.parquet")
    pq.write_table(pa.table({"trial_id": ["b", "c"], "v": [2.5, 2.5]}), folder / "chunk~000001.parquet")
    pq.write_table(pa.table({"trial_id": ["c"], "v": [3.0], "w": ["x"]}), folder / "c.parquet")
    table = read_parquet(folder).sort_by("trial_id").to_pylist()
    assert table == [{"trial_id": "a", "v": 1.0, "w": None}, {"trial_id": "b", "v": 2.5, "w": None},
                     {"trial_id": "c", "v": 3.0, "w": "x"}]
    # columns a part lacks are null; other trials' own parts are not read
    assert read_parquet(folder, columns=["w"], trial_ids={"c", "a"}).sort_by("trial_id").to_pylist() == [
        {"trial_id": "a", "w": None}, {"trial_id": "c", "w": "x"}]
    only = read_parquet(folder, trial_ids={"b"}).to_pylist()
    assert only == [{"trial_id": "b", "v": 2.5}]


def test_a_column_of_numbers_in_one_part_and_text_in_another_reads_as_text(tmp_path):
    folder = tmp_path / "trials.parquet"
    folder.mkdir()
    pq.write_table(pa.table({"trial_id": ["a"], "param.x": [0.5]}), folder / "a.parquet")
    pq.write_table(pa.table({"trial_id": ["b"], "param.x": ["[1, 2]"]}), folder / "b.parquet")
    values = {r["trial_id"]: r["param.x"] for r in read_parquet(folder).to_pylist()}
    assert values == {"a": "0.5", "b": "[1, 2]"}


def _old_layout_study(root):
    """A study folder as versions before parts wrote it: one Parquet file per dataset."""
    root.mkdir()
    (root / "study.json").write_text(json.dumps(META))
    trials = [{"trial_id": f"o{i}", "label": "", "seed": 0, "group": f"g{i}", "status": "finished",
               "error": None, "iterations": 8, "time_total_s": 1.0, "started_at": 1.0, "ended_at": 2.0,
               "param.optim.lr": lr, "config.optim.lr": lr, f"final.{OBJECTIVE}": psnr, f"best.{OBJECTIVE}": psnr}
              for i, (lr, psnr) in enumerate(((1e-3, 30.0), (1e-4, 31.0), (1e-3, 30.2), (1e-4, 31.4)))]
    pq.write_table(pa.Table.from_pylist(trials), root / "trials.parquet")
    curves = [{"trial_id": t["trial_id"], "iteration": it, "loss.total": 0.1 / it, OBJECTIVE: t[f"final.{OBJECTIVE}"]}
              for t in trials for it in (4, 8)]
    pq.write_table(pa.Table.from_pylist(curves), root / "curves.parquet")
    per_image = [{"trial_id": t["trial_id"], "iteration": 8, "set": "Set5", "image": f"im{k}.png",
                  "psnr_y": t[f"final.{OBJECTIVE}"] + k, "ssim_y": 0.8} for t in trials for k in range(3)]
    pq.write_table(pa.Table.from_pylist(per_image), root / "per_image.parquet")
    return root, trials


def test_a_study_in_the_old_single_file_layout_still_reports_and_resumes(tmp_path, capsys):
    from resweep.analysis import build_report, load_study
    from resweep.cli import main

    root, trials = _old_layout_study(tmp_path / "old")
    assert (root / "trials.parquet").is_file()
    data = load_study(root)
    assert len(data.trials) == 4 and len(data.curves) == 8 and len(data.per_image) == 12
    report = build_report(root)
    assert "o3" in (report.out_dir / "tables" / "trials.csv").read_text()
    ablation = report.tables["ablation"]
    assert len(ablation) == 2  # two learning rates
    assert main(["status", str(root)]) == 0
    assert "best eval.Set5.psnr_y 31.4 (o3)" in capsys.readouterr().out
    assert {r["trial_id"] for r in read_trials(root)} == {t["trial_id"] for t in trials}

    # resumed by a new driver: the files become folders (moved, not rewritten), rows kept
    results = StudyResults(root)
    assert (root / "trials.parquet").is_dir() and (root / "curves.parquet").is_dir()
    assert results.counts()["finished"] == 4
    assert results.best(OBJECTIVE, "max")["trial_id"] == "o3"
    _run_trial(results, "n1", 1e-5, 29.0)
    results.compact()
    rows = {r["trial_id"]: r for r in read_trials(root)}
    assert set(rows) == {"o0", "o1", "o2", "o3", "n1"} and rows["o1"][f"best.{OBJECTIVE}"] == 31.0
    assert len(load_study(root).per_image) == 12 + 2 * 2  # n1: 2 evaluations x 2 images


@pytest.mark.parametrize("stage", ["moved", "folder"])
def test_a_driver_killed_while_adopting_an_old_file_loses_nothing(tmp_path, stage):
    root, trials = _old_layout_study(tmp_path / "old")
    moved = root / "trials.parquet.single~"
    (root / "trials.parquet").rename(moved)  # killed after the first rename
    if stage == "folder":
        (root / "trials.parquet").mkdir()  # ... or after the mkdir
    results = StudyResults(root)
    assert results.counts()["finished"] == 4 and not moved.exists()


@pytest.mark.ray
def test_the_callback_holds_only_running_trials(ray_local, tmp_path):
    """Per-trial state on the driver is for running trials only (their logs come through the
    study's relay actor, drained into the folder): an ended trial leaves nothing behind."""
    from types import SimpleNamespace

    from resweep.study.callback import StudyCallback
    from resweep.study.trial_spec import TrialSpec

    StudyResults(tmp_path, meta=dict(META)).write_meta()
    callback = StudyCallback(study_dir=tmp_path, name="parts", objective=OBJECTIVE, mode="max",
                             total_trials=3, quiet=True)
    callback.setup()
    trials = []
    for i in range(3):
        spec = TrialSpec(label="", seed=0, params={"optim.lr": 0.1 * (i + 1)},
                         experiment={"optim": {"lr": 0.1 * (i + 1)}, "train": {"iterations": 4}})
        trials.append(SimpleNamespace(trial_id=f"c{i}", config={"trial": spec.to_payload()}, last_result=None,
                                      local_path=str(tmp_path / "none"), error_file=None))
        callback.on_trial_start(iteration=0, trials=[], trial=trials[-1])
    assert set(callback.specs) == {"c0", "c1", "c2"}
    for t in trials[:2]:
        t.last_result = {"iteration": 4, OBJECTIVE: 30.0}
        callback.on_trial_result(iteration=0, trials=[], trial=t, result=t.last_result)
    callback.on_trial_complete(iteration=0, trials=[], trial=trials[0])
    callback.on_trial_error(iteration=0, trials=[], trial=trials[1])
    assert set(callback.specs) == {"c2"}
    counts = callback.results.counts()
    assert counts["finished"] == 1 and counts["running"] == 1 and counts["errored"] == 1
    # Tune retries c1: it is followed again while it runs
    callback.on_trial_start(iteration=0, trials=[], trial=trials[1])
    assert set(callback.specs) == {"c1", "c2"}
    callback.on_experiment_end(trials=trials)


def test_a_part_replaced_while_it_is_read_is_read_whole(tmp_path):
    """A running trial's part is replaced (atomic rename) while readers poll it; each read must
    see one whole file, never a footer of one version with the pages of the next."""
    import threading

    import pyarrow as pa
    import pyarrow.parquet as pq

    from resweep.fileio import atomic_path
    from resweep.study.layout import read_parquet

    folder = tmp_path / "trials.parquet"
    folder.mkdir()
    part = folder / "t1.parquet"
    stop = threading.Event()

    def writer() -> None:
        n = 1
        while not stop.is_set():
            n = n % 50 + 1
            table = pa.table({"trial_id": ["t1"] * n, "value": [float(i) for i in range(n)],
                              "note": ["x" * (n * 7)] * n})
            with atomic_path(part) as tmp:
                pq.write_table(table, tmp)

    with atomic_path(part) as tmp:
        pq.write_table(pa.table({"trial_id": ["t1"], "value": [0.0], "note": ["x"]}), tmp)
    thread = threading.Thread(target=writer)
    thread.start()
    try:
        for _ in range(300):
            table = read_parquet(folder)
            assert table.num_rows == len(set(table["value"].to_pylist()))
    finally:
        stop.set()
        thread.join()
