"""Kendall's tau between a model's test scores and caption-similarity pseudo-labels (BCLS's metric).

For a query, tau-b between the model's scores of its candidates and their pseudo-labels r
(`CaptionStore.relevance`), averaged over the queries whose labels are not all tied. Both
directions: `t2i` (caption queries, image candidates) and `i2t` (image queries, caption
candidates); `kendall_tau` is their mean. Scores are the cosine of the stored `global` features,
i.e. the stage-1 score of two-stage methods and the only score of the others.

The labels here are always tf-idf cosines fitted on the evaluated split (`bcls.store.split_store`),
whatever provider a run trained with, so base and +BCLS rows are measured with the same ruler and
no model is needed. Large splits are subsampled (a seeded, fixed choice of at most `queries`
queries and `candidates` candidates per direction): tau-b is O(candidates^2) per query.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.bcls.store import CaptionStore


def kendall_tau_b(scores: Tensor, labels: Tensor, chunk_elements: int = 1 << 24) -> Tensor:
    """Tau-b of each row of `scores` against the same row of `labels` ([Q, C] -> [Q]); NaN when undefined."""
    rows = max(1, chunk_elements // max(1, scores.shape[1] ** 2))
    out = []
    for s, r in zip(scores.split(rows), labels.split(rows), strict=True):
        ds = torch.sign(s[:, :, None] - s[:, None, :])
        dr = torch.sign(r[:, :, None] - r[:, None, :])
        numerator = (ds * dr).sum(dim=(1, 2))
        untied_s = (ds != 0).sum(dim=(1, 2)).to(s.dtype)
        untied_r = (dr != 0).sum(dim=(1, 2)).to(s.dtype)
        denominator = (untied_s * untied_r).sqrt()
        out.append(torch.where(denominator > 0, numerator / denominator.clamp(min=1e-12), math.nan))
    return torch.cat(out)


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
) -> dict[str, Any]:
    """{"t2i", "i2t", "kendall_tau", "labels", "queries", "candidates"} for global features
    `images` [I, D] (image-index order) and `texts` [T, D] (caption-index order). A direction
    where no query has untied labels reports None."""
    generator = torch.Generator().manual_seed(seed)
    images, texts = images.float(), texts.float()  # on their device (the GPU, when evaluating there)
    result: dict[str, Any] = {"labels": "tfidf"}
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
        tau = kendall_tau_b(scores, labels.to(scores.device)).cpu()
        defined = tau[~tau.isnan()]
        result[direction] = float(defined.mean()) if len(defined) else math.nan
        sizes[direction] = (len(q), len(c))
    result["kendall_tau"] = (result["t2i"] + result["i2t"]) / 2
    for key in ("t2i", "i2t", "kendall_tau"):  # undefined (every label tied): null, not NaN, in JSON
        result[key] = None if math.isnan(result[key]) else result[key]
    result["queries"] = {d: s[0] for d, s in sizes.items()}
    result["candidates"] = {d: s[1] for d, s in sizes.items()}
    return result
