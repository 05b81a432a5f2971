"""`xmodal-bench score`: the metrics of embeddings computed anywhere (.npy in, one JSON object out).

The embeddings are L2-normalised (cosine similarity), then scored with the same functions the
LightningModule's evaluation uses (`metrics.protocols`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from xmodal_bench.argtypes import positive_int
from xmodal_bench.catalogue import BUILTIN_PROTOCOLS

# the registered protocols (`metrics.protocols`), spelled out so `--help` needs no torch
PROTOCOLS = BUILTIN_PROTOCOLS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `score` subcommand's options."""
    parser.add_argument("--image-embeddings", type=Path, required=True, help="[N, D] float .npy")
    parser.add_argument("--text-embeddings", type=Path, required=True, help="[M, D] float .npy")
    parser.add_argument(
        "--protocol",
        choices=PROTOCOLS,
        required=True,
        help="caption (Flickr30K/synth), coco (5k and 1k), coco1k, coco5k, person",
    )
    parser.add_argument(
        "--text-to-image",
        type=Path,
        default=None,
        help="[M] int .npy: image index of each caption (default: M/N captions per image, in order)",
    )
    parser.add_argument(
        "--image-ids",
        type=Path,
        default=None,
        help="[N] int .npy: the dataset's id of each image (coco, coco5k: adds ECCV Caption and CxC)",
    )
    parser.add_argument(
        "--caption-ids", type=Path, default=None, help="[M] int .npy: the dataset's id of each caption"
    )
    parser.add_argument("--image-pids", type=Path, default=None, help="[N] int .npy (person protocol)")
    parser.add_argument("--text-pids", type=Path, default=None, help="[M] int .npy (person protocol)")
    parser.add_argument(
        "--out", type=Path, default=None, help="also write the metrics JSON here (atomically)"
    )
    parser.add_argument(
        "--chunk-size",
        type=positive_int,
        default=None,
        help="queries scored at once (default: from a memory budget)",
    )


def run(args: argparse.Namespace) -> int:
    """Score, print one JSON object on stdout, write --out if given. UserError propagates to the CLI.

    A metric left out (ids that are not the COCO 5K test split) is one `note:` line on stderr.
    """
    check_arguments(args)
    import sys

    from xmodal_bench.atomic import atomic_write_json
    from xmodal_bench.metrics.score import score_files

    notes: list[str] = []
    metrics = score_files(
        args.image_embeddings,
        args.text_embeddings,
        args.protocol,
        text_to_image=args.text_to_image,
        image_pids=args.image_pids,
        text_pids=args.text_pids,
        chunk_size=args.chunk_size,
        image_ids=args.image_ids,
        caption_ids=args.caption_ids,
        notes=notes,
    )
    for note in notes:
        print(f"xmodal-bench: note: {note}", file=sys.stderr)
    print(json.dumps(metrics))
    if args.out is not None:
        atomic_write_json(args.out, metrics)
    return 0


def check_arguments(args: argparse.Namespace) -> None:
    """The argument mistakes `score_files` refuses first (worded as there), before torch is imported."""
    from xmodal_bench.errors import UserError

    person = args.protocol == "person"
    if person and (args.image_pids is None or args.text_pids is None):
        raise UserError("--protocol person needs both --image-pids and --text-pids")
    if person and args.text_to_image is not None:
        raise UserError("--text-to-image is for caption protocols; --protocol person matches by pid")
    if not person and (args.image_pids is not None or args.text_pids is not None):
        raise UserError(f"--image-pids/--text-pids are for --protocol person, not {args.protocol}")
    for path, what in (
        (args.image_embeddings, "image embeddings"),
        (args.text_embeddings, "text embeddings"),
    ):
        if not path.is_file():
            raise UserError(f"{what} file not found: {path}")
