"""Person protocol (CUHK-PEDES, ICFG-PEDES, RSTPReid, synth_reid): text queries against the image
gallery; a gallery image is a hit when it shows the query's person id. Definitions as IRRA's
evaluation: R@K = the best-ranked positive is within the top K; AP = mean over the positives,
in rank order, of k / (rank_k + 1); INP = #positives / (rank of the worst positive + 1)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from xmodal_bench.errors import UserError
from xmodal_bench.metrics._checks import check_embeddings, check_labels, check_pair
from xmodal_bench.metrics.ranks import positive_ranks

PERSON_METRIC_NAMES = ("r1", "r5", "r10", "map", "minp")


def positive_gallery_index(query_pids: Tensor, gallery_pids: Tensor) -> Tensor:
    """[Q, P] gallery indices (ascending) of the items sharing each query's pid, padded with -1.

    Raises UserError naming how many queries have no positive in the gallery.
    """
    order = torch.argsort(gallery_pids, stable=True)
    pids, counts = torch.unique_consecutive(gallery_pids[order], return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.searchsorted(pids, query_pids).clamp(max=pids.shape[0] - 1)
    found = pids[slot] == query_pids
    num_positives = torch.where(found, counts[slot], 0)
    missing = int((num_positives == 0).sum())
    if missing:
        raise UserError(
            f"{missing} of {query_pids.shape[0]} text queries have no gallery image with the same pid; "
            "every query needs at least one positive"
        )
    slots = torch.arange(int(num_positives.max()), device=query_pids.device)
    position = (starts[slot][:, None] + slots).clamp(max=gallery_pids.shape[0] - 1)
    return torch.where(slots < num_positives[:, None], order[position], -1)


def person_ranks(
    text_emb: Tensor,
    image_emb: Tensor,
    text_pids: Tensor,
    image_pids: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Exact 0-based ranks of every positive of every text query: int64 [M, P], each row sorted
    ascending and padded with -1 (the padded form `person_metrics_from_ranks` takes)."""
    check_embeddings("text embeddings", text_emb)
    check_embeddings("image embeddings", image_emb)
    check_pair("text embeddings", text_emb, "image embeddings", image_emb)
    device = text_emb.device
    query_pids = check_labels("text_pids", text_pids, text_emb.shape[0], device)
    gallery_pids = check_labels("image_pids", image_pids, image_emb.shape[0], device)
    positives = positive_gallery_index(query_pids, gallery_pids)
    ranks = positive_ranks(text_emb, image_emb, positives, chunk_size, score_dtype)
    return _sort_padded(ranks)


def _sort_padded(ranks: Tensor) -> Tensor:
    """Sort each row ascending with the -1 padding moved to the end."""
    big = torch.iinfo(torch.int64).max
    ordered = torch.sort(torch.where(ranks < 0, big, ranks), dim=1).values
    return torch.where(ordered == big, -1, ordered)


def _as_padded(positive_ranks: Tensor | Sequence[Tensor]) -> Tensor:
    if isinstance(positive_ranks, Tensor):
        if positive_ranks.ndim != 2:
            raise ValueError(f"padded positive ranks must be [Q, P], got shape {tuple(positive_ranks.shape)}")
        return positive_ranks.to(torch.int64)
    rows = [torch.as_tensor(r, dtype=torch.int64).flatten() for r in positive_ranks]
    if not rows:
        raise ValueError("no queries")
    return torch.nn.utils.rnn.pad_sequence(rows, batch_first=True, padding_value=-1)


def person_metrics_from_ranks(positive_ranks: Tensor | Sequence[Tensor]) -> dict[str, float]:
    """R@1/5/10, mAP and mINP (percent) from the 0-based ranks of each query's positives.

    `positive_ranks` is either padded, an int tensor [Q, P] whose negative entries are padding,
    or ragged, a sequence of Q 1-D tensors; rows need not be sorted. Each query needs at least
    one positive. This is also the entry point for re-rankers that compute ranks their own way.
    """
    ranks = _sort_padded(_as_padded(positive_ranks))
    if ranks.shape[0] == 0:
        raise ValueError("no queries")
    valid = ranks >= 0
    num_positives = valid.sum(1)
    if bool((num_positives == 0).any()):
        raise UserError(f"{int((num_positives == 0).sum())} queries have no positive rank")
    r = ranks.double()
    first = r[:, 0]
    worst = r.gather(1, (num_positives - 1)[:, None]).squeeze(1)
    k = torch.cumsum(valid, 1).double()
    ap = (torch.where(valid, k / (r + 1), 0.0)).sum(1) / num_positives
    inp = num_positives / (worst + 1)
    out = {f"r{n}": float((first < n).double().mean() * 100) for n in (1, 5, 10)}
    out["map"] = float(ap.mean() * 100)
    out["minp"] = float(inp.mean() * 100)
    return out


def person_retrieval(
    text_emb: Tensor,
    image_emb: Tensor,
    text_pids: Tensor,
    image_pids: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """The person protocol's metrics (`PERSON_METRIC_NAMES`): text queries, image gallery, hit = same pid."""
    ranks = person_ranks(text_emb, image_emb, text_pids, image_pids, chunk_size, score_dtype)
    return person_metrics_from_ranks(ranks)
