"""COCO's two reporting conventions: 5K (the whole test set) and 1K (five folds, averaged)."""

from __future__ import annotations

import torch
from torch import Tensor

from xmodal_bench.errors import UserError
from xmodal_bench.metrics._checks import check_embeddings, check_owner_index
from xmodal_bench.metrics.caption import CAPTION_METRIC_NAMES, caption_retrieval

COCO_1K_FOLDS = 5


def fold_bounds(num_images: int, folds: int = COCO_1K_FOLDS) -> list[tuple[int, int]]:
    """Contiguous [start, stop) image ranges with numpy.array_split's sizes (larger folds first)."""
    if num_images < folds:
        raise UserError(f"COCO 1K needs at least {folds} images to make {folds} folds, got {num_images}")
    base, extra = divmod(num_images, folds)
    bounds, start = [], 0
    for k in range(folds):
        stop = start + base + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def coco_1k(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
    folds: int = COCO_1K_FOLDS,
) -> dict[str, float]:
    """COCO 1K: images split into `folds` contiguous folds in image order; each fold is scored on
    its images and the captions they own; every metric is the mean over the folds."""
    check_embeddings("image embeddings", image_emb)
    check_embeddings("text embeddings", text_emb)
    owner = check_owner_index(text_to_image, text_emb.shape[0], image_emb.shape[0], image_emb.device)
    total = dict.fromkeys(CAPTION_METRIC_NAMES, 0.0)
    bounds = fold_bounds(image_emb.shape[0], folds)
    for start, stop in bounds:
        captions = torch.nonzero((owner >= start) & (owner < stop)).squeeze(1)
        fold = caption_retrieval(
            image_emb[start:stop], text_emb[captions], owner[captions] - start, chunk_size, score_dtype
        )
        for key, value in fold.items():
            total[key] += value
    return {key: value / len(bounds) for key, value in total.items()}


def coco_5k(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """COCO 5K: the plain caption protocol over the whole test set."""
    return caption_retrieval(image_emb, text_emb, text_to_image, chunk_size, score_dtype)


def coco_retrieval(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """Both COCO conventions, keys prefixed `5k/<name>` and `1k/<name>`."""
    five = coco_5k(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    one = coco_1k(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    return {**{f"5k/{k}": v for k, v in five.items()}, **{f"1k/{k}": v for k, v in one.items()}}
