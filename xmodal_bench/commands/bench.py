"""`xmodal-bench bench --method M --data D [flags] [key=value ...]`: train and evaluate one pair.

The flags and overrides make one `RunRequest` (`run.request`), the same value a sweep builds; the
run returns its record, and this command then rebuilds the dataset's leaderboard, beside the runs
(`{runs_dir}/_leaderboards/`) unless `--leaderboards-dir` names another folder.
"""

from __future__ import annotations

import argparse
from typing import Any

from xmodal_bench.argtypes import devices, integer, positive_int


def add_run_arguments(parser: argparse.ArgumentParser, method: str | None = "clip") -> None:
    """Arguments of every command that composes a run config (bench, zeroshot, ...); `method`
    None: the command fixes the method itself (no --method option)."""
    if method is not None:
        parser.add_argument("--method", default=method, help="method spec, e.g. clip, irra, clip+bcls")
    parser.add_argument("--data", default="synth", help="dataset name (see `xmodal-bench list`)")
    parser.add_argument(
        "--data-root", default=None, help="folder holding converted datasets (default: data/)"
    )
    parser.add_argument("--scale", default="tiny", choices=["tiny", "base"], help="backbone scale")
    parser.add_argument("--max-epochs", type=positive_int, default=None)
    parser.add_argument("--devices", type=devices, default=None, help="number of devices or 'auto'")
    parser.add_argument("--seed", type=integer, default=None)
    parser.add_argument("--runs-dir", default=None, help="where runs are written (default: runs/)")
    parser.add_argument(
        "--leaderboards-dir",
        default=None,
        help="where leaderboards are written (default: RUNS_DIR/_leaderboards)",
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. optim.lr=1e-4"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_run_arguments(parser)
    parser.add_argument(
        "--resume", action="store_true", help="continue an unfinished run from its last checkpoint"
    )
    parser.add_argument(
        "--no-leaderboard", action="store_true", help="do not rebuild the leaderboard (a sweep does it once)"
    )


def request_from_args(args: argparse.Namespace) -> Any:
    from xmodal_bench.run.request import RunRequest

    return RunRequest(
        method=args.method,
        dataset=args.data,
        scale=args.scale,
        seed=args.seed,
        data_root=args.data_root,
        runs_dir=args.runs_dir,
        leaderboards_dir=args.leaderboards_dir,
        max_epochs=args.max_epochs,
        devices=args.devices,
        overrides=tuple(args.overrides),
    )


def run(args: argparse.Namespace) -> int:
    from datamodules.manifest import read_manifest
    from xmodal_bench.registry import dataset_info, require_dataset_present

    request = request_from_args(args)
    # a mistake answers before torch is imported: the config, a missing or stale dataset
    light = request.check()
    require_dataset_present(light.data.name, light.data.root)
    if not dataset_info(light.data.name, light.data.root).synthetic:
        read_manifest(light.data.root, light.data.name, verify=False)  # shards hashed later, once

    from lightning.pytorch.utilities import rank_zero_only

    from xmodal_bench.report.leaderboard import write_leaderboards
    from xmodal_bench.report.summary import format_summary
    from xmodal_bench.run.bench import bench
    from xmodal_bench.run.folders import leaderboards_dir_for

    cfg = request.compose()
    record = bench(cfg, resume=args.resume)
    if rank_zero_only.rank != 0:
        return 0
    print(format_summary(record))
    if not args.no_leaderboard:
        out = leaderboards_dir_for(cfg)
        write_leaderboards(cfg.runs_dir, out, [cfg.data.name])
        print(f"leaderboard: {out / (cfg.data.name + '.md')}")
    return 0
