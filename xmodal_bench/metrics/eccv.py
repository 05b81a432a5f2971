"""ECCV Caption and CxC metrics of the COCO 5K test split, computed by the `eccv-caption` package.

ECCV Caption (Chun et al., ECCV 2022) adds human- and machine-verified positives to the COCO 5K
test split and scores retrieval by mAP@R, R-Precision and R@1 over them; CxC (Parekh et al., EACL
2021) adds human similarity judgements, reported as R@{1,5,10}. Both are defined on COCO's own
image and caption ids, so they depend on the ids, never on row order.

This module only builds what the package takes: per query its top-K retrieved gallery ids
(K = 10 or the largest ECCV positive count of the direction, whichever is larger), then calls
`eccv_caption.Metrics.compute_all_metrics` and reports its numbers in percent. A retrieval
function (`TopK`) supplies the lists: exact dot-product top-K of embeddings (`embedding_top_k`,
ties by index as a stable sort; both directions from one pass over the score tiles, see
`metrics.topk`) or any inference mode's search (LIST_CHUNK queries at a time).
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

from xmodal_bench.metrics import topk

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
#: Queries whose top-K lists are turned into Python lists at once (a `TopK` search).
LIST_CHUNK = 1024

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


class EmbeddingTopK:
    """`TopK` by exact dot product of the embeddings, ties by gallery index (as a stable sort).

    `both(k_i2t, k_t2i)` gives every query's list of both directions from one pass over the score
    tiles (`metrics.topk`); calling it (`TopK`) searches one direction for some queries.
    """

    def __init__(
        self,
        image_emb: Tensor,
        text_emb: Tensor,
        chunk_size: int | None = None,
        score_dtype: torch.dtype = torch.float32,
    ) -> None:
        self.image_emb, self.text_emb = image_emb, text_emb
        self.chunk_size, self.score_dtype = chunk_size, score_dtype

    def __call__(self, direction: str, rows: Tensor, k: int) -> Tensor:
        images, texts = self.image_emb.to(self.score_dtype), self.text_emb.to(self.score_dtype)
        kernel = images.device.type == "cpu" and self.score_dtype == torch.float32
        if direction == "i2t":
            found = kernel and topk.kernel_top_k(images[rows], texts, min(k, len(texts)), 0, self.chunk_size)
            return found[0] if found else topk.torch_top_k(images[rows], texts, k, self.chunk_size)
        found = kernel and topk.kernel_top_k(images, texts[rows], 0, min(k, len(images)), self.chunk_size)
        return found[1] if found else topk.torch_top_k(texts[rows], images, k, self.chunk_size)

    def both(self, k_i2t: int, k_t2i: int) -> tuple[Tensor, Tensor]:
        """(i2t [N, k_i2t] caption rows, t2i [M, k_t2i] image rows) of every query, best first."""
        return topk.both_directions(
            self.image_emb, self.text_emb, k_i2t, k_t2i, self.chunk_size, self.score_dtype
        )


def embedding_top_k(
    image_emb: Tensor,
    text_emb: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> EmbeddingTopK:
    """Exact dot-product top-K (`EmbeddingTopK`); `chunk_size`: query rows per score tile."""
    return EmbeddingTopK(image_emb, text_emb, chunk_size, score_dtype)


def _id_lists(
    found: np.ndarray, query_ids: np.ndarray, gallery_ids: np.ndarray, k: int
) -> dict[int, list[int]]:
    """{query id: gallery ids of its found rows}; rows < 0 and a short list's tail become misses.

    A miss is a distinct id no positive has (-1, -2, ... by position), so sets keep their size.
    """
    if found.shape[1] < k:  # a search that returns fewer (a short shortlist): pad as misses
        found = np.pad(found, ((0, 0), (0, k - found.shape[1])), constant_values=-1)
    ids = gallery_ids[found.clip(min=0)]
    if (found < 0).any():
        ids = np.where(found >= 0, ids, -1 - np.arange(k)[None, :])
    return dict(zip(query_ids.tolist(), ids.tolist(), strict=True))


def retrieved_lists(
    top_k: TopK, direction: str, query_ids: np.ndarray, gallery_ids: np.ndarray, k: int, device: Any = "cpu"
) -> dict[int, list[int]]:
    """{query id: its top-k gallery ids}, built LIST_CHUNK queries at a time."""
    out: dict[int, list[int]] = {}
    rows = torch.arange(len(query_ids), device=device)
    for part in rows.split(LIST_CHUNK):
        found = top_k(direction, part, k).cpu().numpy()
        out.update(_id_lists(found, query_ids[part.cpu().numpy()], gallery_ids, k))
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
    k_i2t, k_t2i = _list_length("i2t"), _list_length("t2i")
    if isinstance(top_k, EmbeddingTopK):  # both directions from one pass over the scores
        found_i2t, found_t2i = top_k.both(k_i2t, k_t2i)
        i2t = _id_lists(found_i2t.cpu().numpy(), images, captions, k_i2t)
        t2i = _id_lists(found_t2i.cpu().numpy(), captions, images, k_t2i)
    else:
        i2t = retrieved_lists(top_k, "i2t", images, captions, k_i2t, device)
        t2i = retrieved_lists(top_k, "t2i", captions, images, k_t2i, device)
    targets = ("cxc_recalls", "eccv_map_at_r", "eccv_rprecision", "eccv_r1")
    with contextlib.redirect_stderr(io.StringIO()):  # the package's progress bars
        scores = package().compute_all_metrics(i2t, t2i, target_metrics=targets, Ks=CXC_KS, verbose=False)
    out = {}
    for name in ECCV_METRIC_NAMES:
        family, metric = name.split("/")
        direction, _, what = metric.partition("_")
        out[name] = 100.0 * float(scores[f"{family}_{what}"][direction])
    return out
