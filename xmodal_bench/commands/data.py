"""`xmodal-bench data synth|convert`: write the built-in synthetic sets, or convert a public dataset.

`data convert NAME --source DIR --out ROOT` is the CLI face of the converters (`datamodules.converters`).

Prints a progress bar while converting, then the closing summary (images, captions, identities
per split; everything dropped and why) and the `bench` command to run next. Bad input without
`--skip-bad`: the full problem list goes to stdout, one error line to stderr, exit status 2, and
nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from datamodules.converters import CONVERTERS, NAMED
from xmodal_bench.argtypes import integer, positive_int

SYNTHETIC = ("synth", "synth_reid", "synth_pretrain")

__all__ = ["add_arguments", "add_convert_arguments", "add_synth_arguments", "run_convert", "run_synth"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`data synth` and `data convert` (parser: the `data` command's parser)."""
    commands = parser.add_subparsers(dest="data_command", required=True, parser_class=type(parser))
    p = commands.add_parser("synth", help="write a built-in synthetic dataset as shards")
    add_synth_arguments(p)
    p.set_defaults(func=run_synth)
    p = commands.add_parser("convert", help="convert a public dataset (as distributed) into shards")
    add_convert_arguments(p)
    p.set_defaults(func=run_convert)


def add_synth_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--name", choices=SYNTHETIC, default="synth")
    parser.add_argument("--out", default="data", help="dataset root (the set goes to OUT/NAME)")
    parser.add_argument("--seed", type=integer, default=0)


def run_synth(args: argparse.Namespace) -> int:
    from datamodules import generate_synthetic

    path = generate_synthetic(args.name, Path(args.out), seed=args.seed)
    print(f"wrote {path}")
    return 0


def add_convert_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", choices=CONVERTERS, help="dataset format (see the README's data preparation)")
    parser.add_argument(
        "--source",
        required=True,
        help="the dataset as distributed (a folder; jsonl: the file; wds: the folder holding {split}/nshards.txt)",
    )
    parser.add_argument(
        "--out", default="data", help="dataset root: the shards go to OUT/NAME (default: data)"
    )
    parser.add_argument(
        "--name", dest="dataset", default=None, help="dataset name to write (jsonl and wds only)"
    )
    parser.add_argument(
        "--protocol",
        choices=("caption", "person"),
        default=None,
        help="jsonl and wds only: caption, or person (a pid on every image); default: person when "
        "the images carry pids",
    )
    parser.add_argument(
        "--skip-bad", action="store_true", help="leave bad input out (and report it) instead of failing"
    )
    parser.add_argument(
        "--shard-images", type=positive_int, default=1000, help="images per shard (default 1000)"
    )
    parser.add_argument(
        "--shorter-side",
        type=positive_int,
        default=None,
        metavar="N",
        help="store images downscaled to a shorter side of N px (never upscaled; JPEG re-encoded at "
        "quality 95, others as PNG): faster decoding in training. Default: the bytes as distributed",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="image reader threads (default: 2 x cores, at most 8)",
    )


def run_convert(args: argparse.Namespace) -> int:
    from datamodules.converters import convert
    from datamodules.converters.engine import format_report
    from datamodules.converters.records import BadInputError
    from xmodal_bench.errors import UserError

    if args.dataset is not None and args.name not in NAMED:
        raise UserError(
            f"--name is only for {' and '.join(NAMED)}; {args.name} is always written as {args.out}/{args.name}"
        )
    if args.protocol is not None and args.name not in NAMED:
        raise UserError(f"--protocol is only for {' and '.join(NAMED)}; {args.name} has its own protocol")
    try:
        report = convert(
            args.name,
            args.source,
            args.out,
            dataset=args.dataset,
            skip_bad=args.skip_bad,
            shard_images=args.shard_images,
            shorter_side=args.shorter_side,
            workers=args.workers,
            progress=sys.stderr.isatty(),
            protocol=args.protocol,
        )
    except BadInputError as exc:
        print(f"bad input in {args.source} (nothing written):")
        print("\n".join(f"  {line}" for line in exc.problems.lines()))
        sys.stdout.flush()
        raise
    print(format_report(report))
    root = report.out_dir.parent
    bench = f"xmodal-bench bench --method clip --data {report.dataset} --data-root {root}"
    print(f"next: {bench}")
    if args.name in NAMED:
        print(
            f"  (usable by name: its manifest gives the protocol and sizes; for other settings "
            f"add benchmarks/data/{report.dataset}.yaml, f30k.yaml or cuhk.yaml are templates)"
        )
    return 0
