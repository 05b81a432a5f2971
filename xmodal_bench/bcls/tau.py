"""Kendall's tau between a model's test scores and caption-similarity pseudo-labels (BCLS's metric).

For a query, tau-b between the model's scores of its candidates and their pseudo-labels r
(`CaptionStore.relevance`), averaged over the queries whose labels are not all tied. Both
directions: `t2i` (caption queries, image candidates) and `i2t` (image queries, caption
candidates); `kendall_tau` is their mean. Scores are the cosine of the stored `global` features,
i.e. the stage-1 score of two-stage methods and the only score of the others.

The labels here are always tf-idf cosines fitted on the evaluated split (`bcls.store.split_store`),
whatever provider a run trained with, so base and +BCLS rows are measured with the same ruler and
no model is needed. Large splits are subsampled (a seeded, fixed choice of at most `queries`
queries and `candidates` candidates per direction). Tau-b is O(candidates log candidates) per
query (Knight's algorithm, `kendall_tau_b`), equal to `scipy.stats.kendalltau`.

Each measured query's tau is also kept (`tau/t2i` [captions], `tau/i2t` [images]; NaN for a query
outside the subsample or with all labels tied) and saved with the run's ranks, so the paired
bootstrap resamples tau like the recalls (`tau_from_values` recomputes the column from them).
The candidates stay fixed: an interval covers the choice of queries, not of candidates.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.bcls.store import CaptionStore
from xmodal_bench.metrics.protocols import MetricInfo

TAU_INFO = MetricInfo("kendall_tau", "Kendall τ", digits=3)
TAU_VALUES = {"t2i": "tau/t2i", "i2t": "tau/i2t"}  # direction -> name of its per-query taus in a run's ranks


def _tied_pairs(sorted_values: Tensor) -> Tensor:
    """Per row of ascending `sorted_values` [Q, n]: the number of tied pairs, sum over groups of t(t-1)/2."""
    return _tied_pairs_where(_group_starts(sorted_values[:, 1:] != sorted_values[:, :-1]))


def _group_starts(changes: Tensor) -> Tensor:
    """[Q, n] index of the first element of each element's run, from `changes` [Q, n-1] (element i+1 starts a run)."""
    rows, n = changes.shape[0], changes.shape[1] + 1
    position = torch.arange(n, device=changes.device).expand(rows, n)
    new = torch.ones(rows, n, dtype=torch.bool, device=changes.device)
    new[:, 1:] = changes
    return torch.where(new, position, 0).cummax(dim=1).values


def _tied_pairs_where(starts: Tensor) -> Tensor:
    """Sum over elements of their position within their run = sum over runs of t(t-1)/2."""
    position = torch.arange(starts.shape[1], device=starts.device)
    return (position - starts).sum(dim=1)


def _inversions(values: Tensor) -> Tensor:
    """Per row of `values` [Q, n] (integers in [0, n)): #{i < j : v_i > v_j}, in O(n log n).

    A most-significant-bit-first radix pass: at bit b the elements are stably grouped by their
    higher bits (`current`), and a pair first differing at bit b is an inversion when the earlier
    one has the bit set. Each pass counts those pairs with cumulative sums, then stably splits
    every group by bit b (zeros first), so no pass sorts: log2(n) passes of O(n) each.
    """
    rows, n = values.shape
    current = values.clone()
    total = torch.zeros(rows, dtype=torch.int64, device=values.device)
    position = torch.arange(n, device=values.device).expand(rows, n)
    for b in reversed(range(max(1, int(n - 1).bit_length()))):
        prefix = current >> (b + 1)
        bit = (current >> b) & 1
        zero = 1 - bit
        start = _group_starts(prefix[:, 1:] != prefix[:, :-1])
        last = torch.ones(rows, n, dtype=torch.bool, device=values.device)
        last[:, :-1] = prefix[:, 1:] != prefix[:, :-1]
        end = torch.where(last, position, n).flip(1).cummin(dim=1).values.flip(1)
        ones_before = bit.cumsum(1) - bit  # exclusive, whole row
        zeros_before = zero.cumsum(1) - zero
        ones_in = ones_before - ones_before.gather(1, start)  # within the group, before this element
        zeros_in = zeros_before - zeros_before.gather(1, start)
        total += (ones_in * zero).sum(1)
        group_zeros = zeros_before.gather(1, end) + zero.gather(1, end) - zeros_before.gather(1, start)
        target = torch.where(bit == 0, start + zeros_in, start + group_zeros + ones_in)
        current = torch.empty_like(current).scatter_(1, target, current)
    return total


def _dense_ranks(sorted_values: Tensor) -> Tensor:
    """Dense 0-based ranks of ascending `sorted_values` [Q, n] (equal values share a rank)."""
    ranks = torch.zeros(sorted_values.shape, dtype=torch.int64, device=sorted_values.device)
    ranks[:, 1:] = (sorted_values[:, 1:] != sorted_values[:, :-1]).long().cumsum(1)
    return ranks


def kendall_tau_b(scores: Tensor, labels: Tensor, chunk_elements: int = 1 << 22) -> Tensor:
    """Tau-b of each row of `scores` against the same row of `labels` ([Q, C] -> [Q]); NaN when undefined.

    Knight's O(C log C) algorithm per row (as `scipy.stats.kendalltau`): sort by (score, label),
    count tied pairs in the scores, in the labels and in both, and the discordant pairs as the
    inversions of the labels in that order (`_inversions`). Rows are processed in chunks of
    about `chunk_elements` entries; float64 at the end, so the result equals scipy's tau-b.
    """
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(
            f"scores and labels must be the same [Q, C] shape, got {tuple(scores.shape)} and {tuple(labels.shape)}"
        )
    n = scores.shape[1]
    rows = max(1, chunk_elements // max(1, n))
    out = []
    for s, r in zip(scores.split(rows), labels.split(rows), strict=True):
        # lexicographic sort by (score, label): by label, then stably by score
        by_label = torch.sort(r, dim=1, stable=True)
        s_by_label = s.gather(1, by_label.indices)
        by_score = torch.sort(s_by_label, dim=1, stable=True)
        x = by_score.values
        y_ranks = _dense_ranks(by_label.values).gather(1, by_score.indices)
        x_starts = _group_starts(x[:, 1:] != x[:, :-1])
        x_ties = _tied_pairs_where(x_starts)
        both = (x[:, 1:] != x[:, :-1]) | (y_ranks[:, 1:] != y_ranks[:, :-1])
        joint_ties = _tied_pairs_where(_group_starts(both))
        y_ties = _tied_pairs(by_label.values)
        discordant = _inversions(y_ranks)
        total = n * (n - 1) // 2
        numerator = (total - x_ties - y_ties + joint_ties - 2 * discordant).double()
        denominator = ((total - x_ties).double() * (total - y_ties).double()).sqrt()
        out.append(torch.where(denominator > 0, numerator / denominator.clamp(min=1e-300), math.nan))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.float64)


def _sample(n: int, k: int, generator: torch.Generator) -> Tensor:
    return torch.arange(n) if n <= k else torch.randperm(n, generator=generator)[:k].sort().values


def pseudo_label_tau(
    images: Tensor,
    texts: Tensor,
    store: CaptionStore,
    split: str,
    queries: int = 1000,
    candidates: int = 1000,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Kendall tau of global features `images` [I, D] (image-index order) and `texts` [T, D]
    (caption-index order) against the split's pseudo-labels.

    Returns the summary {"t2i", "i2t", "kendall_tau", "labels", "queries", "candidates"} (a
    direction where no query has untied labels reports None) and each query's tau (`TAU_VALUES`
    names; float64 [T] and [I], NaN where not measured).
    """
    generator = torch.Generator().manual_seed(seed)
    images, texts = images.float(), texts.float()  # on their device (the GPU, when evaluating there)
    result: dict[str, Any] = {"labels": "tfidf"}
    values: dict[str, Tensor] = {}
    sizes = {}
    for direction in ("t2i", "i2t"):
        n_query, n_cand = (len(texts), len(images)) if direction == "t2i" else (len(images), len(texts))
        q, c = _sample(n_query, queries, generator), _sample(n_cand, candidates, generator)
        q_dev, c_dev = q.to(images.device), c.to(images.device)
        if direction == "t2i":
            scores = texts[q_dev] @ images[c_dev].T
            labels = store.relevance(split, c, q).T
        else:
            scores = images[q_dev] @ texts[c_dev].T
            labels = store.relevance(split, q, c)
        per_query = torch.full((n_query,), math.nan, dtype=torch.float64)
        per_query[q] = kendall_tau_b(scores, labels.to(scores.device)).cpu()
        values[TAU_VALUES[direction]] = per_query
        sizes[direction] = (len(q), len(c))
    found = tau_from_values(values)
    result.update({key.removeprefix("kendall_tau/"): value for key, value in found.items()})
    for key in ("t2i", "i2t", "kendall_tau"):  # undefined (every label tied): null, not NaN, in JSON
        result[key] = None if math.isnan(result[key]) else result[key]
    result["queries"] = {d: s[0] for d, s in sizes.items()}
    result["candidates"] = {d: s[1] for d, s in sizes.items()}
    return result, values


def tau_from_values(values: dict[str, Tensor]) -> dict[str, float]:
    """{"kendall_tau/t2i", "kendall_tau/i2t", "kendall_tau"} from per-query taus (`TAU_VALUES`
    names; NaN: not measured): each direction's mean over its measured queries, and the mean of
    the two (NaN when undefined).
    Empty when `values` lacks them (a run made before they were saved)."""
    if not all(name in values for name in TAU_VALUES.values()):
        return {}
    out = {}
    for direction, name in TAU_VALUES.items():
        measured = values[name][~values[name].isnan()]
        out[f"kendall_tau/{direction}"] = float(measured.mean()) if len(measured) else math.nan
    out["kendall_tau"] = (out["kendall_tau/t2i"] + out["kendall_tau/i2t"]) / 2
    return out
