"""`xmodal-bench eval --checkpoint CKPT [--data D] [--devices N]`: test a trained checkpoint."""

from __future__ import annotations

import argparse
from pathlib import Path

from xmodal_bench.argtypes import devices


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `eval` subcommand's options."""
    parser.add_argument("--checkpoint", type=Path, required=True, help="a .ckpt written by bench")
    parser.add_argument("--data", default=None, help="dataset to test on (default: the one it trained on)")
    parser.add_argument("--data-root", default=None, help="folder holding converted datasets")
    parser.add_argument("--devices", type=devices, default=None, help="number of devices or 'auto'")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: {run}/eval/{dataset}/)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.eval_batch_size=64"
    )


def run(args: argparse.Namespace) -> int:
    from xmodal_bench.errors import UserError

    if not args.checkpoint.is_file():  # answered before torch is imported (as `safe_load` words it)
        raise UserError(f"checkpoint not found: {args.checkpoint}")
    from lightning.pytorch.utilities import rank_zero_only

    from xmodal_bench.report.summary import format_summary
    from xmodal_bench.run.evaluate import evaluate_checkpoint

    record = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_root=args.data_root,
        devices=args.devices,
        out=args.out,
        overrides=args.overrides,
    )
    if rank_zero_only.rank == 0:
        print(format_summary(record))
    return 0
