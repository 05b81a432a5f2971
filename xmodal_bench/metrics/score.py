"""Metrics from embeddings saved as .npy files (the library behind `xmodal-bench score`).

The embeddings are L2-normalised here (cosine similarity), then scored with the same functions
the LightningModule's evaluation uses.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from xmodal_bench.errors import UserError
from xmodal_bench.metrics.protocols import Gallery, get_protocol, list_protocols

_FLOAT_DTYPES = ("float16", "float32", "float64")
_MAX_ROWS = 2**31  # far beyond any retrieval gallery; a header claiming more is not an embedding file


def _load(path: Path, what: str) -> np.ndarray:
    """A .npy array, read memory-mapped first so a header's claims are checked against the file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} file not found: {path}")
    try:
        array = np.load(path, allow_pickle=False, mmap_mode="r")
    except (ValueError, OSError, EOFError) as err:
        reason = " ".join(str(err).split())
        raise UserError(f"{what} file {path} is not a readable .npy array ({reason})") from None
    if not isinstance(array, np.ndarray):  # an .npz archive
        raise UserError(f"{what} file {path} is an .npz archive; save one array with numpy.save (.npy)")
    if array.ndim and array.shape[0] > _MAX_ROWS:
        raise UserError(f"{what} file {path} claims {array.shape[0]} rows; not an embedding file")
    return array


def _embeddings(path: Path, what: str) -> torch.Tensor:
    array = _load(path, what)
    if array.ndim != 2:
        raise UserError(f"{what} in {path} must be 2-D [items, dim], got shape {array.shape}")
    if array.dtype.name not in _FLOAT_DTYPES:
        raise UserError(
            f"{what} in {path} must be floating point (float16, float32 or float64), got dtype {array.dtype}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise UserError(f"{what} in {path} is empty (shape {array.shape})")
    out = np.empty(array.shape, dtype=np.float32)
    zero = 0
    # Row blocks that stay in cache: the same float64 arithmetic per row as one whole-array pass
    # (bit-identical rows), at a fraction of the memory traffic.
    for start in range(0, array.shape[0], _ROW_BLOCK):
        block = np.asarray(array[start : start + _ROW_BLOCK], dtype=np.float64)
        if not np.isfinite(block).all():
            raise UserError(f"{what} in {path} contains NaN or infinite values")
        scale = np.abs(block).max(axis=1, keepdims=True)
        zero += int((scale == 0).sum())
        if not zero:
            out[start : start + _ROW_BLOCK] = _unit_rows(block, scale)
    if zero:
        raise UserError(f"{what} in {path} has {zero} all-zero rows, which cannot be L2-normalised")
    return torch.from_numpy(out)


_ROW_BLOCK = 1024  # rows normalised at once (1024 x 512 float64: 4 MiB)


def _unit_rows(array: np.ndarray, scale: np.ndarray) -> np.ndarray:
    scaled = array / scale
    return scaled / np.linalg.norm(scaled, axis=1, keepdims=True)


def normalize_rows(array: np.ndarray, what: str) -> np.ndarray:
    """Rows scaled to unit L2 norm without overflow, for any finite input (float64 in and out).

    Each row is first divided by its largest absolute value, so the norm is computed on numbers
    in [-1, 1] (a float32 row of 1e38s would otherwise overflow to inf and normalise to zeros).
    """
    scale = np.abs(array).max(axis=1, keepdims=True)
    zero = int((scale == 0).sum())
    if zero:
        raise UserError(f"{what} has {zero} all-zero rows, which cannot be L2-normalised")
    return _unit_rows(array, scale)


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
    image_ids: Path | None = None,
    caption_ids: Path | None = None,
    notes: list[str] | None = None,
) -> dict[str, float]:
    """Metrics of saved embeddings under a registered `protocol` (caption, coco, coco1k, coco5k, person).

    Caption protocols: `text_to_image` gives each caption's image index; without it captions are
    grouped evenly (M must be a multiple of N; caption c belongs to image c // (M / N)). `coco`
    reports both 5k/ and 1k/ keys. Person: `image_pids` and `text_pids` are required.
    `image_ids` / `caption_ids` (one dataset id per row, both or neither; `coco`, `coco5k`) add
    the protocol's id metrics (ECCV Caption, CxC); when the ids are not the COCO 5K test split
    they are left out and a one-line reason is appended to `notes`. Every bad input raises
    UserError with one line.
    """
    scheme = get_protocol(protocol)
    if (image_ids is None) != (caption_ids is None):
        raise UserError("--image-ids and --caption-ids go together: give both or neither")
    if image_ids is not None and not scheme.id_metric_info:
        with_ids = [name for name in list_protocols() if get_protocol(name).id_metric_info]
        raise UserError(
            f"--image-ids/--caption-ids add id metrics, which --protocol {protocol} has none of; "
            f"use {' or '.join(with_ids)}"
        )
    if scheme.positives == "pid":
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
    if scheme.positives == "pid":
        assert image_pids is not None and text_pids is not None
        gallery_pids = _integers(image_pids, "image pids", num_images, "images")
        query_pids = _integers(text_pids, "text pids", num_texts, "captions")
        owner = torch.zeros(num_texts, dtype=torch.int64)
        gallery = Gallery(owner, images, texts, gallery_pids, query_pids, chunk_size=chunk_size)
        return scheme.evaluate(gallery)
    if text_to_image is None:
        if num_texts % num_images:
            raise UserError(
                f"{num_texts} captions cannot be grouped evenly over {num_images} images; "
                "pass --text-to-image with each caption's image index"
            )
        owner = torch.arange(num_texts) // (num_texts // num_images)
    else:
        owner = _integers(text_to_image, "text-to-image", num_texts, "captions")
    gallery = Gallery(owner, images, texts, chunk_size=chunk_size)
    metrics = scheme.metrics(scheme.ranks(gallery))
    if image_ids is not None and caption_ids is not None:
        gallery = replace(
            gallery,
            image_ids=_integers(image_ids, "image ids", num_images, "images").numpy(),
            caption_ids=_integers(caption_ids, "caption ids", num_texts, "captions").numpy(),
        )
        found = scheme.id_metrics(gallery)
        metrics.update(found.metrics)
        if found.note and notes is not None:
            notes.append(found.note)
    return metrics
