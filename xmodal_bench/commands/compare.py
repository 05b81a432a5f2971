"""`xmodal-bench compare RUN_A RUN_B`: is A different from B? Paired bootstrap over the test queries.

Both runs' saved per-query ranks (`ranks.npz`) are resampled with one seeded draw of the
queries; for every metric of the protocol, and Kendall tau (saved with the primary mode), it
prints A, B, the paired difference A - B with its 95 percent interval and a two-sided p-value
(`report.significance`). The runs must be on the same dataset and protocol. A run is a run
folder (the one holding `results.json` and `ranks.npz`); `--mode-b` pairs two inference modes, of
one run or of two (TGDT fused against its global stage).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xmodal_bench.argtypes import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `compare` subcommand's options."""
    parser.add_argument("run_a", type=Path, metavar="RUN_A", help="a run folder (results.json, ranks.npz)")
    parser.add_argument("run_b", type=Path, metavar="RUN_B", help="another run folder on the same dataset")
    parser.add_argument(
        "--mode", default=None, help="inference mode to compare (default: each run's primary)"
    )
    parser.add_argument(
        "--mode-b",
        default=None,
        help="RUN_B's mode when it differs from --mode, e.g. two modes of one run: RUN RUN --mode fused --mode-b global",
    )
    parser.add_argument(
        "--resamples", type=positive_int, default=1000, help="bootstrap resamples (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the query resampling (default 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _record(run: Path) -> dict:
    from xmodal_bench.errors import UserError
    from xmodal_bench.report.results import RESULTS_FILE, read_results

    if not run.is_dir():
        raise UserError(f"{run} is not a run folder")
    record = read_results(run / RESULTS_FILE)
    if record is None:
        raise UserError(f"{run / RESULTS_FILE} is missing or not a results file")
    return record


def run(args: argparse.Namespace) -> int:
    """Compare two runs and print the table (or JSON). UserError propagates to the CLI."""
    from xmodal_bench.errors import UserError
    from xmodal_bench.metrics.protocols import get_protocol
    from xmodal_bench.report.significance import compare, run_ranks

    a, b = _record(args.run_a), _record(args.run_b)
    for field in ("dataset", "protocol"):
        if a[field] != b[field]:
            raise UserError(f"the runs are on different {field}s ({a[field]} vs {b[field]}): nothing to pair")
    mode_a = args.mode or a["primary_mode"]
    mode_b = args.mode_b or args.mode or b["primary_mode"]
    protocol = get_protocol(a["protocol"])
    rows = compare(
        protocol,
        run_ranks(args.run_a, mode_a),
        run_ranks(args.run_b, mode_b),
        resamples=args.resamples,
        seed=args.seed,
    )
    if args.json:
        print(
            json.dumps(
                {
                    "a": str(args.run_a),
                    "b": str(args.run_b),
                    "mode_a": mode_a,
                    "mode_b": mode_b,
                    "metrics": rows,
                }
            )
        )
        return 0
    print(f"A = {args.run_a} ({a['method']}, {mode_a})")
    print(f"B = {args.run_b} ({b['method']}, {mode_b})")
    print(
        f"{a['dataset']}, {protocol.name} protocol; paired bootstrap: {args.resamples} resamples, seed {args.seed}"
    )
    width = max([len("metric"), *(len(row["metric"]) for row in rows)])
    print(f"{'metric':<{width}} {'A':>9} {'B':>9} {'A - B':>9}  {'95% interval':<21} {'p':>6}")
    for row in rows:
        d = row["digits"]  # as the leaderboard shows the metric (Kendall tau: 3)
        span = f"[{row['low']:.{d}f}, {row['high']:.{d}f}]"
        print(
            f"{row['metric']:<{width}} {row['a']:>9.{d}f} {row['b']:>9.{d}f} {row['difference']:>+9.{d}f}"
            f"  {span:<21} {row['p']:>6.3f}"
        )
    return 0
