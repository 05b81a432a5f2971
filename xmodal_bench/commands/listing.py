"""`xmodal-bench list`: the registered methods and plugins, and the datasets."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", default="data", help="also list the datasets converted under this folder"
    )


def run(args: argparse.Namespace) -> int:
    from xmodal_bench.registry import dataset_info, list_datasets, method_entries, plugin_entries

    print("methods:")
    for name, entry in method_entries().items():
        print(f"  {name:<12} {entry.summary}")
    for name, entry in plugin_entries().items():
        print(f"  +{name:<11} {entry.summary} (plugin: <method>+{name})")
    print("datasets:")
    for name in list_datasets(args.data_root):
        info = dataset_info(name, args.data_root)
        kind = "built-in synthetic" if info.synthetic else f"convert with: {info.convert}"
        print(f"  {name:<12} {info.protocol:<8} {info.summary} [{kind}]")
    return 0
