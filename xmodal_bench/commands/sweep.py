"""`xmodal-bench sweep --config NAME`: run a sweep file's grid, then rebuild its leaderboards."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sweep` subcommand's options."""
    parser.add_argument(
        "--config", required=True, help="sweep file (benchmarks/sweeps/NAME.yaml) or just NAME"
    )
    parser.add_argument("--force", action="store_true", help="rerun runs whose results already exist")
    parser.add_argument("--dry-run", action="store_true", help="list the runs (and which would be skipped)")
    parser.add_argument(
        "--skip-unknown", action="store_true", help="run the registered methods, skip the others"
    )
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="rewrite the sweep's regression baseline from this sweep (reruns every run, noise seeds too)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="do not check the sweep's regression baseline"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every bench in this process (single device only: no DDP; for CPU CI)",
    )
    parser.add_argument("--quiet", action="store_true", help="only the summary (runs still log to sweep.log)")
    parser.add_argument("--data-root", default=None, help="overrides the sweep file's data_root")
    parser.add_argument("--runs-dir", default=None, help="overrides the sweep file's runs_dir")
    parser.add_argument(
        "--leaderboards-dir", default=None, help="overrides the sweep file's leaderboards_dir"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides added to every run of the grid"
    )


def run(args: argparse.Namespace) -> int:
    from xmodal_bench.sweep.spec import check_runs, load_sweep

    spec = load_sweep(args.config)
    check_runs(  # a mistake anywhere in the grid answers before torch is imported
        spec,
        extra_overrides=args.overrides,
        data_root=args.data_root,
        runs_dir=args.runs_dir,
        leaderboards_dir=args.leaderboards_dir,
        skip_unknown=args.skip_unknown,
    )
    from xmodal_bench.sweep.runner import format_report, launcher_rank, run_sweep

    report = run_sweep(
        spec,
        force=args.force,
        dry_run=args.dry_run,
        in_process=args.in_process,
        quiet=args.quiet,
        skip_unknown=args.skip_unknown,
        update_baseline=args.update_baseline,
        check_baseline=not args.no_check,
        extra_overrides=args.overrides,
        data_root=args.data_root,
        runs_dir=args.runs_dir,
        leaderboards_dir=args.leaderboards_dir,
    )
    if launcher_rank() != 0:
        return 1 if report.failed else 0
    print(format_report(report))
    if not args.dry_run and report.outcomes:
        print(f"leaderboards: {report.leaderboards_dir / 'README.md'}")
    if report.failed:
        print(f"{len(report.failed)} run(s) failed", file=sys.stderr)
    if report.baseline_problems:
        print(f"{len(report.baseline_problems)} metric(s) fell below the baseline", file=sys.stderr)
    return 0 if report.ok else 1
