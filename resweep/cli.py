"""Command line: ``resweep train | run | resume | extend | status | logs | report | compare | presets | data prepare | demo``."""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from resweep.errors import ConfigError, ResweepError


def _cmd_train(args: argparse.Namespace) -> int:
    from resweep.config import load_config
    from resweep.trainables.train import run_training

    config = load_config(args.config)
    output = Path(args.output or Path("runs") / config.name)
    summary = run_training(
        config,
        output_dir=output,
        workers=args.workers,
        address=args.address,
        use_gpu=args.gpu,
        cpus_per_worker=args.cpus_per_worker,
        max_failures=args.max_failures,
    )
    print(f"\nrun {summary.status} in {summary.seconds:.1f} s")
    for key, value in sorted(summary.metrics.items()):
        if key.startswith("eval.") and isinstance(value, float):
            print(f"  {key:40s} {value:.4f}")
    print(f"results: {summary.output_dir}  (config.yaml, curves.parquet, per_image.parquet, result.json, log.txt)")
    if summary.checkpoint:
        print(f"last checkpoint: {summary.checkpoint}")
    if summary.log_path:
        print(f"log: {summary.log_path}")
    if summary.error:
        where = f" (full log: {summary.log_path})" if summary.log_path else ""
        print(f"resweep: error: {summary.error}{where}", file=sys.stderr)
        return 1
    return 0


def _cmd_data_prepare(args: argparse.Namespace) -> int:
    from resweep.data.patch_store import prepare_patch_store

    folder = Path(args.folder)
    out = Path(args.out) if args.out else folder.with_name(folder.name + f"_sub{args.sub_size}.arrow")
    path = prepare_patch_store(folder, out, sub_size=args.sub_size, stride=args.stride)
    print(f"patch store written: {path}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from resweep.study import load_study, run_study

    if args.study.startswith("preset:"):
        from resweep.presets import load_preset

        study = load_preset(args.study.removeprefix("preset:"), paper_schedule=args.paper_schedule)
    else:
        study = load_study(args.study, paper_schedule=args.paper_schedule)
    if args.paper_schedule and not study.paper_schedule:
        # refuse rather than run the reduced budget while the user believes it is the paper's
        raise ConfigError(
            "--paper-schedule asks for the paper's full training schedule, but this study has no "
            "'paper_schedule' section to apply; drop the flag or add the paper's overrides there",
            source=args.study, field="paper_schedule",
        )
    run_study(study, study_dir=args.dir, address=args.address, fresh=args.fresh, source=args.study)
    return 0


def _cmd_presets(args: argparse.Namespace) -> int:
    from resweep.presets import format_preset_line, preset_summaries

    # read from the YAML text only: data paths are resolved when a preset runs, not when listed
    for summary in preset_summaries():
        print(format_preset_line(summary))
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    from resweep.study import resume_study

    resume_study(args.dir, address=args.address, local_dir=args.local_dir)
    return 0


@contextlib.contextmanager
def _study_folder(location: str, only: Sequence[str] | None = None) -> Iterator[Path]:
    """A study folder, or the study mirrored at a storage URI fetched into a temporary one."""
    if "://" not in location:
        yield Path(location)
        return
    import tempfile

    from resweep.study.mirror import fetch_study

    with tempfile.TemporaryDirectory(prefix="resweep-study-") as tmp:
        yield fetch_study(location, Path(tmp) / "study", only=only)


def _cmd_extend(args: argparse.Namespace) -> int:
    from resweep.study import extend_study

    study_dir = extend_study(args.dir, seeds=args.seeds or (), trials=args.trials, address=args.address)
    from resweep.analysis.tables import ablation_table, to_text

    print("\n" + to_text(ablation_table(study_dir)))
    return 0


def _cmd_status(args: argparse.Namespace) -> int:
    # only the study's files: no torch, no Ray (works on a copy of a study without them)
    from resweep.study.layout import META_FILE, TRIAL_DIRS, TRIALS_FILE
    from resweep.study.status_view import print_status

    only = [META_FILE, TRIALS_FILE, *([f"{TRIAL_DIRS}/{args.trial}"] if args.trial else [])]
    with _study_folder(args.dir, only) as folder:
        print_status(folder, trial=args.trial)
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    from resweep.study.layout import META_FILE, TRIAL_DIRS
    from resweep.study.status_view import print_trial_log

    with _study_folder(args.dir, [META_FILE, f"{TRIAL_DIRS}/{args.trial}"]) as folder:
        print_trial_log(folder, args.trial, tail=args.tail)
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from resweep.analysis import build_report

    with _study_folder(args.dir) as folder:
        out = args.out
        if out is None and folder != Path(args.dir):  # fetched into a temporary folder
            import json

            out = Path("reports") / json.loads((folder / "study.json").read_text())["name"]
        report = build_report(folder, out_dir=out, robust=args.robust)
    print(f"report written: {report.index_path}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    # only the studies' files: no torch, no Ray
    from resweep.analysis.compare_report import build_comparison

    try:
        report = build_comparison(args.dirs, args.out, metric=args.metric, sets=args.sets)
    except ValueError as exc:  # unknown metric or set, fewer than two studies
        raise ConfigError(str(exc)) from None
    print(report.text, end="")
    print(f"comparison written: {report.index_path}  (tables in {report.out_dir / 'tables'})")
    return 0


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="several studies side by side: matched rows, best per study, Δ with paired CIs")
    p.add_argument("dirs", nargs="+", help="study folders (the first is the reference of Δ)")
    p.add_argument("--out", required=True, help="output folder (index.html, compare.txt, tables/)")
    p.add_argument("--metric", nargs="+", help="metric(s) as for the ablation table (default: first objective)")
    p.add_argument("--sets", nargs="+", help="evaluation sets (default: all)")
    p.set_defaults(func=_cmd_compare)


def _cmd_demo(args: argparse.Namespace) -> int:
    from resweep.study.demo import run_demo

    run_demo(args.dir)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resweep", description="Hyperparameter studies of image-restoration training on Ray."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train one model with N Ray Train (DDP) workers")
    p.add_argument("config", help="experiment config (YAML)")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--output", help="output folder (default runs/<name>); rerun to resume")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None, help="default: if Ray has GPUs")
    p.add_argument("--cpus-per-worker", type=float, default=1)
    p.add_argument("--max-failures", type=int, default=2, help="worker failures survived per run")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("data", help="dataset tools")
    data_sub = p.add_subparsers(dest="data_command", required=True)
    q = data_sub.add_parser("prepare", help="cut a folder of images into a memory-mapped patch store")
    q.add_argument("folder")
    q.add_argument("--out", help="output .arrow file (default: beside the folder)")
    q.add_argument("--sub-size", type=int, default=480)
    q.add_argument("--stride", type=int, default=240)
    q.set_defaults(func=_cmd_data_prepare)

    p = sub.add_parser("run", help="run a study (Ray Tune + Optuna)")
    p.add_argument("study", help="study file (YAML), or preset:NAME (see `resweep presets`)")
    p.add_argument("--paper-schedule", action="store_true", help="use the paper's full training schedule")
    p.add_argument("--dir", help="study folder (default: studies/<name>)")
    p.add_argument("--address", help="Ray cluster address (default: embedded local Ray)")
    p.add_argument("--fresh", action="store_true", help="refuse to reuse an existing study folder")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("presets", help="list the shipped study presets (paper ablations, demo)")
    p.set_defaults(func=_cmd_presets)

    p = sub.add_parser("resume", help="continue an interrupted study")
    p.add_argument("dir", help="study folder, or its remote storage (s3://bucket/studies/NAME)")
    p.add_argument("--address")
    p.add_argument("--dir", dest="local_dir",
                   help="with a storage URI: the local folder to fetch the study into (default studies/<name>)")
    p.set_defaults(func=_cmd_resume)

    p = sub.add_parser("extend", help="add seeds or trials to a study that ran (finished trials are kept)")
    p.add_argument("dir")
    p.add_argument("--seeds", type=int, nargs="+", help="new seeds: every configuration runs on them too")
    p.add_argument("--trials", type=int, default=0, help="more configurations (random and Optuna searches)")
    p.add_argument("--address")
    p.set_defaults(func=_cmd_extend)

    p = sub.add_parser("status", help="where a study stands, read from disk")
    p.add_argument("dir", help="study folder, or its remote storage (s3://bucket/studies/NAME)")
    p.add_argument("--trial", help="show this trial's log instead")
    p.set_defaults(func=_cmd_status)

    p = sub.add_parser("logs", help="one trial's log (<study>/trials/<trial_id>/log.txt)")
    p.add_argument("dir", help="study folder, or its remote storage")
    p.add_argument("trial", help="trial id (see `resweep status DIR`)")
    p.add_argument("--tail", type=int, help="only the last N lines")
    p.set_defaults(func=_cmd_logs)

    p = sub.add_parser("report", help="ablation tables and a dashboard for a study")
    p.add_argument("dir", help="study folder, or its remote storage (s3://bucket/studies/NAME)")
    p.add_argument("--out", help="output folder (default: <study>/report; reports/<name> for a storage URI)")
    p.add_argument("--robust", action="store_true",
                   help="add rliable-style columns: interquartile mean and P(improvement over the baseline row)")
    p.set_defaults(func=_cmd_report)
    _add_compare(sub)

    p = sub.add_parser("demo", help="the main job: a small real study on the demo photographs, and its report")
    p.add_argument("--dir", default="studies/demo")
    p.set_defaults(func=_cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ResweepError as exc:
        print(f"resweep: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("resweep: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
