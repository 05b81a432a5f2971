"""`xmodal-bench pretrain`: train the tiny scale's pretrained start, `synthclip` (see `run.pretrain`)."""

from __future__ import annotations

import argparse
import shlex
import sys

from xmodal_bench.argtypes import positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", default="data", help="where synth_pretrain and the weights go (default: data/)"
    )
    parser.add_argument(
        "--runs-dir", default="runs", help="where the pretraining run is kept (default: runs/)"
    )
    parser.add_argument("--max-epochs", type=positive_int, default=None, help="override the recipe's epochs")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted pretraining run")
    parser.add_argument(
        "--install", action="store_true", help="also replace the weights that ship with the package"
    )


def run(args: argparse.Namespace) -> int:
    from xmodal_bench.run.pretrain import pretrain

    command = "xmodal-bench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    record = pretrain(args.data_root, args.runs_dir, args.resume, args.max_epochs, args.install, command)
    metrics = record["run"]["test_metrics"]
    print(
        f"synthclip: {record['run']['steps']} steps in {record['run']['fit_seconds']:.0f} s; held-out "
        f"rsum {metrics.get('rsum', float('nan')):.1f}; weights {args.data_root}/synthclip/{record['file']} "
        f"({record['bytes'] / 2**20:.1f} MiB, sha256 {record['sha256'][:12]}...)"
    )
    return 0
