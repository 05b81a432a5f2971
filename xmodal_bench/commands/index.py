"""`xmodal-bench index build|search`: a trained checkpoint as a search engine (see `xmodal_bench.serve`)."""

from __future__ import annotations

import argparse

from xmodal_bench.argtypes import non_negative_int, positive_int

# `retrieval.index_base.BACKENDS`, spelled out so `--help` needs no torch (checked by a test)
BACKENDS = ("auto", "torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`index build` and `index search` subcommands (parser: the `index` command's parser)."""
    commands = parser.add_subparsers(dest="index_command", required=True, parser_class=type(parser))
    p = commands.add_parser("build", help="encode a dataset split with a checkpoint and write a search index")
    p.add_argument(
        "--checkpoint", required=True, help="a Lightning checkpoint written by `xmodal-bench bench`"
    )
    p.add_argument(
        "--data", default=None, help="dataset name (default: the one the checkpoint was trained on)"
    )
    p.add_argument("--data-root", default=None, help="folder holding converted datasets (default: the run's)")
    p.add_argument("--split", default="test", help="split to index (default: test)")
    p.add_argument("--out", required=True, help="folder to write the index to")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="index backend (default: the method's)")
    p.add_argument("--nlist", type=non_negative_int, default=None, help="faiss-ivf cells (0 = 4 sqrt(N))")
    p.add_argument("--nprobe", type=positive_int, default=None, help="faiss-ivf cells scanned per query")
    p.add_argument("--hnsw-m", type=positive_int, default=None, help="faiss-hnsw links per node")
    p.add_argument(
        "--ef-construction", type=positive_int, default=None, help="faiss-hnsw build candidate list"
    )
    p.add_argument("--ef-search", type=positive_int, default=None, help="faiss-hnsw search candidate list")
    p.add_argument(
        "--index-device", choices=["auto", "cpu", "cuda"], default=None, help="where the index runs"
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="encoding batch size")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    p.set_defaults(index_func="build")

    p = commands.add_parser("search", help="answer a text or image query from an index")
    p.add_argument("index", help="a folder written by `xmodal-bench index build`")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", default=None, help="find the images that match this caption")
    query.add_argument("--image", default=None, help="find the captions that match this image file")
    p.add_argument("--k", type=positive_int, default=5, help="number of results (default: 5)")
    p.add_argument("--nprobe", type=positive_int, default=None, help="override faiss-ivf nprobe")
    p.add_argument("--ef-search", type=positive_int, default=None, help="override faiss-hnsw efSearch")
    p.add_argument("--checkpoint", default=None, help="model to encode the query (default: the one indexed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(index_func="search")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from xmodal_bench.errors import UserError

    # the mistakes `serve` would find first, answered before torch is imported (worded as there)
    if args.index_func == "search" and not (Path(args.index) / "meta.json").is_file():
        raise UserError(
            f"no index at {args.index} (missing meta.json); create one with `xmodal-bench index build`"
        )
    checkpoint = args.checkpoint if args.index_func == "build" else None
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise UserError(f"checkpoint not found: {checkpoint}")
    from xmodal_bench import serve

    return int(getattr(serve, args.index_func)(args))
