"""`xmodal-bench` command line (also `python -m xmodal_bench`).

Each subcommand is a thin layer over a library function. User mistakes (`UserError`, bad
arguments) end with one line on stderr and exit status 2; anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xmodal_bench.argtypes import integer, positive_int
from xmodal_bench.errors import UserError

PROG = "xmodal-bench"


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in the same one-line style as everything else."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _devices(value: str) -> int | str:
    if value == "auto" or value.startswith("[") or value == "-1":
        return value if value != "-1" else -1
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of devices or 'auto', got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("number of devices must be at least 1")
    return number


# ------------------------------------------------------------------------------------------------ list


def cmd_list(args: argparse.Namespace) -> int:
    from xmodal_bench.registry import dataset_info, list_datasets, method_entries, plugin_entries

    print("methods:")
    for name, entry in method_entries().items():
        print(f"  {name:<12} {entry.summary}")
    for name, entry in plugin_entries().items():
        print(f"  +{name:<11} {entry.summary} (plugin: <method>+{name})")
    print("datasets:")
    for name in list_datasets():
        info = dataset_info(name)
        kind = "built-in synthetic" if info.synthetic else f"convert with: {info.convert}"
        print(f"  {name:<12} {info.protocol:<8} {info.summary} [{kind}]")
    return 0


# ----------------------------------------------------------------------------------------------- bench


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by every command that composes a run config."""
    parser.add_argument("--method", default="clip", help="method spec, e.g. clip, irra, clip+bcls")
    parser.add_argument("--data", default="synth", help="dataset name (see `xmodal-bench list`)")
    parser.add_argument(
        "--data-root", default=None, help="folder holding converted datasets (default: data/)"
    )
    parser.add_argument("--scale", default="tiny", choices=["tiny", "base"], help="backbone scale")
    parser.add_argument("--max-epochs", type=positive_int, default=None)
    parser.add_argument("--devices", type=_devices, default=None, help="number of devices or 'auto'")
    parser.add_argument("--seed", type=integer, default=None)
    parser.add_argument("--runs-dir", default=None, help="where runs are written (default: runs/)")
    parser.add_argument("--leaderboards-dir", default=None, help="where leaderboards are written")
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4"
    )


def compose_from_args(args: argparse.Namespace) -> Any:
    from xmodal_bench.config import compose
    from xmodal_bench.registry import dataset_info, method_sections

    parts, sections = method_sections(args.method)
    dataset_info(args.data)  # unknown dataset: fail early with the list of known ones
    flags: dict[str, Any] = {}
    if args.data_root is not None:
        flags.setdefault("data", {})["root"] = args.data_root
    if args.max_epochs is not None:
        flags.setdefault("trainer", {})["max_epochs"] = args.max_epochs
    if args.devices is not None:
        flags.setdefault("trainer", {})["devices"] = args.devices
    if args.seed is not None:
        flags["seed"] = args.seed
    if args.runs_dir is not None:
        flags["runs_dir"] = args.runs_dir
    if args.leaderboards_dir is not None:
        flags["leaderboards_dir"] = args.leaderboards_dir
    return compose(parts, sections, args.data, args.scale, flags=flags, overrides=args.overrides)


def format_summary(record: dict[str, Any]) -> str:
    """A short table of what a run scored and cost."""
    lines = [f"{record['method']} on {record['dataset']} ({record['protocol']} protocol, {record['scale']})"]
    for mode, entry in record["modes"].items():
        metrics = "  ".join(
            f"{k}={v:.2f}" for k, v in entry["metrics"].items() if "medr" not in k and "meanr" not in k
        )
        latency = entry.get("latency_ms", {})
        timing = "  ".join(f"{k}={v:.3f}" for k, v in latency.items())
        star = "*" if mode == record["primary_mode"] else " "
        lines.append(f" {star}{mode:<10} {metrics}")
        if timing:
            lines.append(f"  {'':<10} latency per query: {timing}")
        if (tau := entry.get("kendall_tau")) and tau["kendall_tau"] is not None:  # see xmodal_bench.bcls.tau
            lines.append(
                f"  {'':<10} kendall tau: {tau['kendall_tau']:.4f} (t2i {tau['t2i']:.4f}, i2t {tau['i2t']:.4f})"
            )
    eff = record["efficiency"]
    train = eff.get("train_samples_per_s")
    lines.append(
        "  train: "
        + (f"{train:.1f} samples/s" if train else "n/a")
        + f", encode: {eff['images_per_s']:.1f} images/s, {eff['texts_per_s']:.1f} texts/s"
        + f", params: {eff['params_m']:.2f} M, peak memory: {eff['peak_memory_mb']:.0f} MB"
    )
    lines.append(f"  results: {record.get('_run_dir', '')}/results.json")
    return "\n".join(lines)


def cmd_bench(args: argparse.Namespace) -> int:
    from xmodal_bench.sweep.run import bench

    cfg = compose_from_args(args)
    record = bench(cfg, resume=getattr(args, "resume", False))
    print(format_summary(record))
    print(f"leaderboard: {Path(cfg.leaderboards_dir) / (cfg.data.name + '.md')}")
    return 0


# ------------------------------------------------------------------------------------------------ data


def cmd_data_synth(args: argparse.Namespace) -> int:
    from datamodules import generate_synthetic

    path = generate_synthetic(args.name, Path(args.out), seed=args.seed)
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog=PROG, description="Benchmark image-text retrieval methods on shared data and metrics."
    )
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = commands.add_parser("list", help="list methods and datasets")
    p.set_defaults(func=cmd_list)

    p = commands.add_parser("bench", help="train and evaluate one method on one dataset")
    add_run_arguments(p)
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoints/last.ckpt")
    p.set_defaults(func=cmd_bench)

    from xmodal_bench.metrics import score

    p = commands.add_parser("score", help="evaluate saved embeddings (.npy) and print the metrics as JSON")
    score.add_arguments(p)
    p.set_defaults(func=score.run)

    from xmodal_bench.retrieval import index_cli

    p = commands.add_parser("index", help="build a search index from a checkpoint, or query one")
    index_cli.add_arguments(p)
    p.set_defaults(func=index_cli.run)

    from xmodal_bench.sweep import evaluate, leaderboard, runner

    for name, module, text in (
        ("sweep", runner, "run a sweep file: methods x datasets x seeds, then the leaderboards"),
        ("eval", evaluate, "evaluate a trained checkpoint (optionally on another dataset, under DDP)"),
        ("leaderboard", leaderboard, "rebuild leaderboards/ (tables, plots, index) from every results.json"),
    ):
        p = commands.add_parser(name, help=text)
        module.add_arguments(p)
        p.set_defaults(func=module.run)

    data = commands.add_parser("data", help="prepare datasets").add_subparsers(
        dest="data_command", required=True, parser_class=_Parser
    )
    p = data.add_parser("synth", help="write a built-in synthetic dataset as shards")
    p.add_argument("--name", choices=["synth", "synth_reid"], default="synth")
    p.add_argument("--out", default="data", help="dataset root (the set goes to OUT/NAME)")
    p.add_argument("--seed", type=integer, default=0)
    p.set_defaults(func=cmd_data_synth)
    from datamodules.converters import command as convert_command

    p = data.add_parser("convert", help="convert a public dataset (as distributed) into shards")
    convert_command.add_arguments(p)
    p.set_defaults(func=convert_command.run)
    return parser


class _DropAdvert(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_third_party_noise() -> None:
    """Messages from libraries that are not about the user's run (deprecations inside Lightning, adverts)."""
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_DropAdvert())


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_third_party_noise()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
