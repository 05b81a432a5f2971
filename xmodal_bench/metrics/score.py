"""`xmodal-bench score`: metrics from embeddings saved as .npy files (JSON out).

The embeddings are L2-normalised here (cosine similarity), then scored with the same functions
the LightningModule's evaluation uses.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from xmodal_bench.argtypes import positive_int
from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.errors import UserError
from xmodal_bench.metrics.caption import caption_retrieval
from xmodal_bench.metrics.coco import coco_1k, coco_5k, coco_retrieval
from xmodal_bench.metrics.person import person_retrieval

PROTOCOLS = ("caption", "coco", "coco1k", "coco5k", "person")
_CAPTION_PROTOCOLS = {
    "caption": caption_retrieval,
    "coco": coco_retrieval,
    "coco1k": coco_1k,
    "coco5k": coco_5k,
}


def _load(path: Path, what: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise UserError(f"{what} file {path} is not a readable .npy array ({err})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise UserError(f"{what} file {path} is an .npz archive; save one array with numpy.save (.npy)")
    return array


def _embeddings(path: Path, what: str) -> torch.Tensor:
    array = _load(path, what)
    if array.ndim != 2:
        raise UserError(f"{what} in {path} must be 2-D [items, dim], got shape {array.shape}")
    if array.dtype.kind != "f":
        raise UserError(f"{what} in {path} must be floating point, got dtype {array.dtype}")
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{what} in {path} is empty (shape {array.shape})")
    if not np.isfinite(array).all():
        raise UserError(f"{what} in {path} contains NaN or infinite values")
    tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
    norms = tensor.norm(dim=1, keepdim=True)
    zero = int((norms == 0).sum())
    if zero:
        raise UserError(f"{what} in {path} has {zero} all-zero rows, which cannot be L2-normalised")
    return tensor / norms


def _integers(path: Path, what: str, length: int, length_name: str) -> torch.Tensor:
    array = _load(path, what)
    if array.ndim != 1:
        raise UserError(f"{what} in {path} must be 1-D, got shape {array.shape}")
    if array.dtype.kind not in "iu":
        raise UserError(f"{what} in {path} must hold integers, got dtype {array.dtype}")
    if array.shape[0] != length:
        raise UserError(f"{what} in {path} has {array.shape[0]} entries but there are {length} {length_name}")
    if array.dtype.kind == "u" and array.size and array.max() > np.iinfo(np.int64).max:
        raise UserError(f"{what} in {path} holds values too large for int64")
    return torch.from_numpy(array.astype(np.int64))


def score_files(
    image_embeddings: Path,
    text_embeddings: Path,
    protocol: str,
    text_to_image: Path | None = None,
    image_pids: Path | None = None,
    text_pids: Path | None = None,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """Metrics of saved embeddings under `protocol` (caption, coco, coco1k, coco5k or person).

    Caption protocols: `text_to_image` gives each caption's image index; without it captions are
    grouped evenly (M must be a multiple of N; caption c belongs to image c // (M / N)). `coco`
    reports both 5k/ and 1k/ keys. Person: `image_pids` and `text_pids` are required. Every bad
    input raises UserError with one line.
    """
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if protocol == "person":
        if image_pids is None or text_pids is None:
            raise UserError("--protocol person needs both --image-pids and --text-pids")
        if text_to_image is not None:
            raise UserError("--text-to-image is for caption protocols; --protocol person matches by pid")
    elif image_pids is not None or text_pids is not None:
        raise UserError(f"--image-pids/--text-pids are for --protocol person, not {protocol}")
    images = _embeddings(image_embeddings, "image embeddings")
    texts = _embeddings(text_embeddings, "text embeddings")
    num_images, num_texts = images.shape[0], texts.shape[0]
    if images.shape[1] != texts.shape[1]:
        raise UserError(
            f"image embeddings have dim {images.shape[1]} but text embeddings have dim {texts.shape[1]}"
        )
    if protocol == "person":
        assert image_pids is not None and text_pids is not None
        gallery = _integers(image_pids, "image pids", num_images, "images")
        queries = _integers(text_pids, "text pids", num_texts, "captions")
        return person_retrieval(texts, images, queries, gallery, chunk_size)
    if text_to_image is None:
        if num_texts % num_images:
            raise UserError(
                f"{num_texts} captions cannot be grouped evenly over {num_images} images; "
                "pass --text-to-image with each caption's image index"
            )
        owner = torch.arange(num_texts) // (num_texts // num_images)
    else:
        owner = _integers(text_to_image, "text-to-image", num_texts, "captions")
    return _CAPTION_PROTOCOLS[protocol](images, texts, owner, chunk_size)


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
    """Score, print one JSON object on stdout, write --out if given. UserError propagates to the CLI."""
    metrics = score_files(
        args.image_embeddings,
        args.text_embeddings,
        args.protocol,
        text_to_image=args.text_to_image,
        image_pids=args.image_pids,
        text_pids=args.text_pids,
        chunk_size=args.chunk_size,
    )
    print(json.dumps(metrics))
    if args.out is not None:
        atomic_write_json(args.out, metrics)
    return 0
