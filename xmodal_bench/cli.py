"""`xmodal-bench` command line (also `python -m xmodal_bench`).

Each subcommand is one module of `xmodal_bench.commands`: its options (defined without importing
torch, Lightning or open_clip, so `--help` and argument mistakes answer at once) and a thin `run`
over a library function. User mistakes (`UserError`, bad arguments, an output path that cannot be
written) end with one line on stderr and exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence

from xmodal_bench.commands import (
    bench,
    compare,
    data,
    evaluate,
    index,
    leaderboard,
    listing,
    pretrain,
    score,
    sweep,
    zeroshot,
)
from xmodal_bench.errors import UserError

PROG = "xmodal-bench"


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in the same one-line style as everything else."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


COMMANDS = (
    ("list", listing, "list methods and datasets"),
    ("bench", bench, "train and evaluate one method on one dataset"),
    ("zeroshot", zeroshot, "evaluate a pretrained model without training, on any dataset and protocol"),
    ("pretrain", pretrain, "train the tiny scale's pretrained start (synthclip) on synth_pretrain"),
    ("eval", evaluate, "evaluate a trained checkpoint (optionally on another dataset, under DDP)"),
    ("score", score, "evaluate saved embeddings (.npy) and print the metrics as JSON"),
    ("index", index, "build a search index from a checkpoint, or query one"),
    ("sweep", sweep, "run a sweep file: methods x datasets x seeds, then the leaderboards"),
    (
        "compare",
        compare,
        "paired bootstrap of two runs: each metric's difference, 95 percent interval, p-value",
    ),
    ("leaderboard", leaderboard, "rebuild leaderboard tables (plots, index) from every results.json"),
    ("data", data, "prepare datasets: the built-in synthetic sets, or convert a public one"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Benchmark image-text retrieval methods on shared data and metrics."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, module, text in COMMANDS:
        p = commands.add_parser(name, help=text, description=(module.__doc__ or "").strip().splitlines()[0])
        module.add_arguments(p)
        if hasattr(module, "run"):  # else each of its own subcommands sets `func`
            p.set_defaults(func=module.run)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse `argv`, with `key=value` overrides allowed anywhere among the flags of the commands
    that take them (`bench --method clip optim.lr=1e-4 --seed 3`); anything else unknown is an error."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        stray = [item for item in extra if item.startswith("-")]
        if stray or not hasattr(args, "overrides"):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_third_party_noise() -> None:
    """Messages from libraries that are not about the user's run (deprecations inside Lightning, adverts)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvert())


def _os_error(exc: OSError) -> str:
    """One line for a failed file operation: what failed, and where."""
    where = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    reason = exc.strerror or type(exc).__name__
    return f"{reason}: {where}" if where else " ".join(str(exc).split()) or reason


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_third_party_noise()
    parser = build_parser()
    args = parse_args(parser, argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return UserError.exit_code
    except OSError as exc:  # a full disk, a path that is a file, a missing parent, a permission
        print(f"{PROG}: error: {_os_error(exc)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
