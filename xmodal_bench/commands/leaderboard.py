"""`xmodal-bench leaderboard [--runs-dir R] [--out DIR]`: rebuild leaderboard tables on purpose.

The published `leaderboards/` folder changes only through this command (or a sweep that names it);
a user's own `bench` runs write their tables beside the runs (`{runs_dir}/_leaderboards/`).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `leaderboard` subcommand's options."""
    parser.add_argument("--runs-dir", default="runs", help="where the runs are (default: runs/)")
    parser.add_argument("--out", default="leaderboards", help="where tables go (default: leaderboards/)")
    parser.add_argument(
        "--data", nargs="+", default=None, metavar="DATASET", help="only these datasets (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    """Rebuild the leaderboards and print what was written."""
    from xmodal_bench.errors import UserError

    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"no runs folder {runs_dir}: run `xmodal-bench bench` or `xmodal-bench sweep` first")
    from xmodal_bench.report.leaderboard import INDEX_FILE, write_leaderboards
    from xmodal_bench.report.results import find_results

    if args.data:
        found = sorted({record["dataset"] for record in find_results(runs_dir)})
        unknown = [name for name in args.data if name not in found]
        if unknown:
            raise UserError(
                f"no results for dataset {unknown[0]!r} under {runs_dir}; datasets with results: "
                f"{', '.join(found) or 'none'}"
            )
    written = write_leaderboards(runs_dir, Path(args.out), args.data)
    if not written:
        print(f"no results under {runs_dir}; wrote an empty index {Path(args.out) / INDEX_FILE}")
    for dataset, paths in written.items():
        print(f"{dataset}: " + ", ".join(str(p) for p in paths))
    print(f"index: {Path(args.out) / INDEX_FILE}")
    return 0
