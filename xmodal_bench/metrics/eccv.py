"""ECCV Caption and CxC metrics of the COCO 5K test split, computed by the `eccv-caption` package.

ECCV Caption (Chun et al., ECCV 2022) adds human- and machine-verified positives to the COCO 5K
test split and scores retrieval by mAP@R, R-Precision and R@1 over them; CxC (Parekh et al., EACL
2021) adds human similarity judgements, reported as R@{1,5,10}. Both are defined on COCO's own
image and caption ids, so they depend on the ids, never on row order.

This module only builds what the package takes: per query its top-K retrieved gallery ids
(K = 10 or the largest ECCV positive count of the direction, whichever is larger), built chunk
by chunk (a [chunk, K] block at a time, never a full score matrix of Python lists), then calls
`eccv_caption.Metrics.compute_all_metrics` and reports its numbers in percent. A retrieval
function (`TopK`) supplies the lists: exact dot-product top-K of embeddings (`embedding_top_k`,
ties by index as a stable sort) or any inference mode's search.
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xmodal_bench.metrics.chunking import resolve_chunk_size
from xmodal_bench.metrics.ranks import score_block

ECCV_METRIC_NAMES = (
    "eccv/i2t_map_at_r",
    "eccv/t2i_map_at_r",
    "eccv/i2t_rprecision",
    "eccv/t2i_rprecision",
    "eccv/i2t_r1",
    "eccv/t2i_r1",
    "cxc/i2t_r1",
    "cxc/i2t_r5",
    "cxc/i2t_r10",
    "cxc/t2i_r1",
    "cxc/t2i_r5",
    "cxc/t2i_r10",
)
CXC_KS = (1, 5, 10)
#: Queries whose top-K lists are turned into Python lists at once.
LIST_CHUNK = 1024
#: Score-block elements per top-K call (measured fastest on CPU: about 256 x 25K rows).
TILE_ELEMENTS = 1 << 23

# top_k(direction, query_rows, k) -> [Q, k] gallery rows, best first ("t2i": caption rows ->
# image rows; "i2t": image rows -> caption rows)
TopK = Callable[[str, Tensor, int], Tensor]


@functools.cache
def package() -> Any:
    """The `eccv_caption.Metrics` object (loads the shipped positives once per process)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "failed to import ujson": it falls back to json
        from eccv_caption import Metrics

        return Metrics()


@functools.cache
def coco_test_ids() -> tuple[np.ndarray, np.ndarray]:
    """(image ids [5000], caption ids [25000]) of the COCO 5K test split, as the package ships them."""
    metrics = package()
    captions = np.asarray(metrics.coco_ids, dtype=np.int64)
    images = np.array(sorted(metrics.coco_gts["i2t"]), dtype=np.int64)
    return images, captions


def ids_problem(image_ids: Any, caption_ids: Any, text_to_image: Tensor) -> str | None:
    """Why these ids are not the COCO 5K test split laid out with these owners (None: they are)."""
    images, captions = np.asarray(image_ids, dtype=np.int64), np.asarray(caption_ids, dtype=np.int64)
    want_images, want_captions = coco_test_ids()
    if images.shape != want_images.shape or captions.shape != want_captions.shape:
        return (
            f"{images.size} images and {captions.size} captions, not the COCO 5K test split's "
            f"{want_images.size} and {want_captions.size}"
        )
    if not np.array_equal(np.sort(images), want_images):
        return "the image ids are not the COCO 5K test split's"
    if not np.array_equal(np.sort(captions), np.sort(want_captions)):
        return "the caption ids are not the COCO 5K test split's"
    truth = package().coco_gts["t2i"]
    owners = images[text_to_image.cpu().numpy()]
    wrong = sum(1 for c, i in zip(captions.tolist(), owners.tolist(), strict=True) if truth[c] != [i])
    if wrong:
        return f"{wrong} captions are not paired with their COCO image"
    return None


def _stable_top_k(scores: Tensor, k: int) -> Tensor:
    """Indices [c, k] of each row's k highest scores, as a stable descending sort orders them."""
    extra = min(k + 1, scores.shape[1])  # one more: a tie at the k-th place shows as equal neighbours
    values, indices = scores.topk(extra, dim=1)
    redo = (values[:, 1:] == values[:, :-1]).any(1)
    indices = indices[:, :k]
    rows = torch.nonzero(redo).squeeze(1)
    if rows.numel():  # ties: let a stable sort decide, as the ranks do
        indices[rows] = torch.sort(scores[rows], dim=1, descending=True, stable=True).indices[:, :k]
    return indices


def embedding_top_k(
    image_emb: Tensor,
    text_emb: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> TopK:
    """Exact dot-product top-K, ties by gallery index, computed `chunk_size` queries at a time."""

    def top_k(direction: str, rows: Tensor, k: int) -> Tensor:
        queries, gallery = (text_emb, image_emb) if direction == "t2i" else (image_emb, text_emb)
        gallery = gallery.to(score_dtype)
        # a few hundred rows at a time: the score block stays small enough to be topk'd from cache
        chunk = resolve_chunk_size(chunk_size or max(1, TILE_ELEMENTS // gallery.shape[0]), rows.shape[0], 1)
        parts = [
            _stable_top_k(score_block(queries[part].to(score_dtype), gallery), min(k, gallery.shape[0]))
            for part in rows.split(chunk)
        ]
        return torch.cat(parts)

    return top_k


def retrieved_lists(
    top_k: TopK, direction: str, query_ids: np.ndarray, gallery_ids: np.ndarray, k: int, device: Any = "cpu"
) -> dict[int, list[int]]:
    """{query id: its top-k gallery ids}, built LIST_CHUNK queries at a time."""
    out: dict[int, list[int]] = {}
    rows = torch.arange(len(query_ids), device=device)
    for part in rows.split(LIST_CHUNK):
        found = top_k(direction, part, k).cpu().numpy()
        if found.shape[1] < k:  # a search that returns fewer (a short shortlist): pad as misses
            found = np.pad(found, ((0, 0), (0, k - found.shape[1])), constant_values=-1)
        # a miss is a distinct id no positive has (-1, -2, ... by position), so sets stay the right size
        misses = -1 - np.arange(k)[None, :].repeat(found.shape[0], 0)
        ids = np.where(found >= 0, gallery_ids[found.clip(min=0)], misses)
        for query, retrieved in zip(query_ids[part.cpu().numpy()].tolist(), ids.tolist(), strict=True):
            out[query] = retrieved
    return out


def _list_length(direction: str) -> int:
    positives = package().eccv_gts[direction].values()
    return max(max(CXC_KS), *(len(set(p)) for p in positives))


def eccv_cxc_metrics(image_ids: Any, caption_ids: Any, top_k: TopK, device: Any = "cpu") -> dict[str, float]:
    """The twelve ECCV Caption / CxC metrics (percent, `ECCV_METRIC_NAMES`), by the package.

    image_ids [N] and caption_ids [M] are the COCO ids of the gallery rows (checked beforehand
    with `ids_problem`); `top_k` retrieves gallery rows for query rows.
    """
    images, captions = np.asarray(image_ids, dtype=np.int64), np.asarray(caption_ids, dtype=np.int64)
    i2t = retrieved_lists(top_k, "i2t", images, captions, _list_length("i2t"), device)
    t2i = retrieved_lists(top_k, "t2i", captions, images, _list_length("t2i"), device)
    targets = ("cxc_recalls", "eccv_map_at_r", "eccv_rprecision", "eccv_r1")
    with contextlib.redirect_stderr(io.StringIO()):  # the package's progress bars
        scores = package().compute_all_metrics(i2t, t2i, target_metrics=targets, Ks=CXC_KS, verbose=False)
    out = {}
    for name in ECCV_METRIC_NAMES:
        family, metric = name.split("/")
        direction, _, what = metric.partition("_")
        out[name] = 100.0 * float(scores[f"{family}_{what}"][direction])
    return out
