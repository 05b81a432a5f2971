"""`xmodal-bench list`: the registered methods and plugins, and the datasets."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", default="data", help="also list the datasets converted under this folder"
    )


def run(args: argparse.Namespace) -> int:
    from xmodal_bench.registry import dataset_info, list_datasets, static_names

    methods, plugins = static_names()  # read from the method modules' source: no torch import
    print("methods:")
    for name, summary in methods.items():
        print(f"  {name:<12} {summary}")
    for name, summary in plugins.items():
        print(f"  +{name:<11} {summary} (plugin: <method>+{name})")
    print("datasets:")
    for name in list_datasets(args.data_root):
        info = dataset_info(name, args.data_root)
        kind = "built-in synthetic" if info.synthetic else f"convert with: {info.convert}"
        print(f"  {name:<12} {info.protocol:<8} {info.summary} [{kind}]")
    return 0
