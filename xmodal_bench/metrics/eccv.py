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

Every metric is a mean over its queries (ECCV: the 1,261 image and 1,332 caption queries that
have extra positives; CxC: the queries with CxC positives), so each query row also gets its own
value (`per_query_values`: 0-1, NaN for a row that is not one of the metric's queries). Their
means are checked against the package's numbers on every evaluation; saved beside the ranks,
they give the ECCV and CxC columns the same paired bootstrap as the rank metrics
(`metrics_from_values` of a resample; `report.significance`).
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


def _id_matrix(found: np.ndarray, gallery_ids: np.ndarray, k: int) -> np.ndarray:
    """[Q, k] gallery ids of the found rows; rows < 0 and a short list's tail become misses.

    A miss is a distinct id no positive has (-1, -2, ... by position), so sets keep their size.
    """
    if found.shape[1] < k:  # a search that returns fewer (a short shortlist): pad as misses
        found = np.pad(found, ((0, 0), (0, k - found.shape[1])), constant_values=-1)
    ids = gallery_ids[found.clip(min=0)]
    if (found < 0).any():
        ids = np.where(found >= 0, ids, -1 - np.arange(k)[None, :])
    return ids


def retrieved_ids(
    top_k: TopK, direction: str, gallery_ids: np.ndarray, queries: int, k: int, device: Any = "cpu"
) -> np.ndarray:
    """[queries, k] top-k gallery ids of every query row, searched LIST_CHUNK queries at a time."""
    rows = torch.arange(queries, device=device)
    parts = [
        _id_matrix(top_k(direction, part, k).cpu().numpy(), gallery_ids, k) for part in rows.split(LIST_CHUNK)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, k), dtype=np.int64)


def _list_length(direction: str) -> int:
    positives = package().eccv_gts[direction].values()
    return max(max(CXC_KS), *(len(set(p)) for p in positives))


@functools.cache
def _positive_pairs(family: str, direction: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The package's positives of one family and direction as arrays: (sorted keys of the
    (query id, positive id) pairs, sorted query ids, their distinct positive counts, key span)."""
    positives = (package().eccv_gts if family == "eccv" else package().cxc_gts)[direction]
    queries = np.array(sorted(positives), dtype=np.int64)
    unique = [np.unique(np.asarray(positives[q], dtype=np.int64)) for q in queries.tolist()]
    counts = np.array([len(u) for u in unique], dtype=np.int64)
    owners = np.repeat(queries, counts)
    wanted = np.concatenate(unique) if unique else np.zeros(0, dtype=np.int64)
    span = int(max(queries.max(initial=0), wanted.max(initial=0))) + 1
    return np.sort(owners * span + wanted), queries, counts, span


def _hits(
    family: str, direction: str, found: np.ndarray, query_ids: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(hits [Q, k]: the retrieved id is one of the query's positives, counts [Q]: its distinct
    positives, 0 for a row that is not one of the set's queries)."""
    keys, queries, counts, span = _positive_pairs(family, direction)
    where = np.searchsorted(queries, query_ids).clip(max=max(len(queries) - 1, 0))
    known = queries[where] == query_ids if len(queries) else np.zeros(len(query_ids), dtype=bool)
    row_counts = np.where(known, counts[where] if len(queries) else 0, 0)
    hits = np.isin(query_ids[:, None] * span + found, keys)
    return hits & (found >= 0) & (found < span), row_counts  # a miss (< 0) never hits


def _query_values(family: str, hits: np.ndarray, counts: np.ndarray) -> dict[str, np.ndarray]:
    """Each query's value of the family's metrics (ECCV: mAP@R, R-Precision, R@1; CxC: R@K)."""
    if family == "cxc":
        values = {f"r{k}": hits[:, :k].any(axis=1) for k in CXC_KS}
    else:
        position = np.arange(1, hits.shape[1] + 1)
        within = position[None, :] <= counts[:, None]  # the first R places, R = the query's positives
        precision_at = np.cumsum(hits, axis=1) / position  # hits among the first r, over r
        with np.errstate(divide="ignore", invalid="ignore"):
            values = {
                "map_at_r": (hits * precision_at * within).sum(axis=1) / counts,
                "rprecision": (hits & within).sum(axis=1) / counts,
                "r1": hits[:, 0],
            }
    return {what: np.where(counts > 0, value, np.nan).astype(np.float64) for what, value in values.items()}


def per_query_values(
    found_i2t: np.ndarray, found_t2i: np.ndarray, image_ids: np.ndarray, caption_ids: np.ndarray
) -> dict[str, np.ndarray]:
    """{metric: [query rows] value in 0-1, NaN for rows that are not its queries} of the twelve
    metrics, from the retrieved id matrices (`retrieved_ids`) of both directions."""
    out: dict[str, np.ndarray] = {}
    for direction, found, query_ids in (("i2t", found_i2t, image_ids), ("t2i", found_t2i, caption_ids)):
        for family in ("eccv", "cxc"):
            hits, counts = _hits(family, direction, found, query_ids)
            for what, values in _query_values(family, hits, counts).items():
                out[f"{family}/{direction}_{what}"] = values
    return {name: out[name] for name in ECCV_METRIC_NAMES}


def metrics_from_values(values: Any) -> dict[str, float]:
    """The metrics (percent) of the per-query values present in `values` (a run's, or a resample's)."""
    out = {}
    for name in ECCV_METRIC_NAMES:
        if name in values:
            column = torch.as_tensor(values[name], dtype=torch.float64)
            out[name] = 100.0 * float(torch.nanmean(column))
    return out


def _package_metrics(
    found_i2t: np.ndarray, found_t2i: np.ndarray, images: np.ndarray, captions: np.ndarray
) -> dict[str, float]:
    """The twelve metrics (percent) by `eccv_caption.Metrics.compute_all_metrics` on the lists."""
    i2t = dict(zip(images.tolist(), found_i2t.tolist(), strict=True))
    t2i = dict(zip(captions.tolist(), found_t2i.tolist(), strict=True))
    targets = ("cxc_recalls", "eccv_map_at_r", "eccv_rprecision", "eccv_r1")
    with contextlib.redirect_stderr(io.StringIO()):  # the package's progress bars
        scores = package().compute_all_metrics(i2t, t2i, target_metrics=targets, Ks=CXC_KS, verbose=False)
    out = {}
    for name in ECCV_METRIC_NAMES:
        family, metric = name.split("/")
        direction, _, what = metric.partition("_")
        out[name] = 100.0 * float(scores[f"{family}_{what}"][direction])
    return out


def eccv_cxc_metrics(
    image_ids: Any, caption_ids: Any, top_k: TopK, device: Any = "cpu"
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """(the twelve ECCV Caption / CxC metrics by the package, in percent (`ECCV_METRIC_NAMES`),
    each query row's values (`per_query_values`)).

    image_ids [N] and caption_ids [M] are the COCO ids of the gallery rows (checked beforehand
    with `ids_problem`); `top_k` retrieves gallery rows for query rows. The per-query means must
    equal the package's numbers: a mismatch is a bug here and raises.
    """
    images, captions = np.asarray(image_ids, dtype=np.int64), np.asarray(caption_ids, dtype=np.int64)
    k_i2t, k_t2i = _list_length("i2t"), _list_length("t2i")
    if isinstance(top_k, EmbeddingTopK):  # both directions from one pass over the scores
        rows_i2t, rows_t2i = top_k.both(k_i2t, k_t2i)
        found_i2t = _id_matrix(rows_i2t.cpu().numpy(), captions, k_i2t)
        found_t2i = _id_matrix(rows_t2i.cpu().numpy(), images, k_t2i)
    else:
        found_i2t = retrieved_ids(top_k, "i2t", captions, len(images), k_i2t, device)
        found_t2i = retrieved_ids(top_k, "t2i", images, len(captions), k_t2i, device)
    metrics = _package_metrics(found_i2t, found_t2i, images, captions)
    values = per_query_values(found_i2t, found_t2i, images, captions)
    means = metrics_from_values(values)
    wrong = [name for name in ECCV_METRIC_NAMES if abs(means[name] - metrics[name]) > 1e-6]
    if wrong:
        raise RuntimeError(f"per-query ECCV/CxC values disagree with eccv-caption on {', '.join(wrong)}")
    return metrics, values
