"""Two-stage retrieval: a global shortlist, re-scored by a method's fine scorer.

Stage 1 ranks the whole gallery by the global embeddings and keeps the top K of each query;
stage 2 re-scores only those K with a (costlier) fine scorer, and the shortlist is re-ordered by

    fused = global_weight * s_global + lam * s_fine

Public API (everything else in this module is private):

- `Searcher` (protocol): any object with `search(queries [Q, D], k) -> (scores [Q, k],
  indices [Q, k])`, best first, index -1 where it returns fewer than k (faiss convention).
  `CosineIndex(gallery)` is the exact one (chunked dot products, ties broken by gallery index);
  every index of `retrieval/index.py` (`create_index(cfg).build(gallery)`) serves the same role.
- `FineScorer`: `fine(query_rows [Q], candidate_rows [Q, K]) -> scores [Q, K]`, rows indexing the
  query set and the gallery of one direction; `fine(query_rows, None) -> [Q, G]` scores the whole
  gallery (exhaustive mode). `token_fine_scorer(...)` builds one from token features (TGDT's local
  score, ALADIN's alignment head).
- `two_stage_search(...)`: the served pipeline (top results per query, what latency measures).
- `two_stage_ranks(...)` / `exhaustive_ranks(...)`: exact 0-based ranks of given positives for the
  metrics; top-k of a score block is `metrics.topk.stable_top_k` (ties broken by index).

Rank semantics (exact, for every positive): the final order of a query's gallery is the K
shortlisted items sorted by fused score (ties: lower gallery index first), followed by every other
item in stage-1 order (global score, ties: lower index first). A positive that stage 1 left
outside the shortlist therefore keeps its stage-1 rank (>= K); it is never counted as a hit. With
an approximate index the shortlist may miss items of the exact global top K; the formula below
still gives the position in the order just described: rank = K' + (its exact global rank) - (number
of shortlisted items ahead of it in global order), K' the shortlist length.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor

from xmodal_bench.errors import UserError
from xmodal_bench.metrics import ranks_in_block, resolve_chunk_size, score_block
from xmodal_bench.metrics.topk import stable_top_k
from xmodal_bench.retrieval.token_scores import MEAN, WordPooling


class Searcher(Protocol):
    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Top-k of each query: (scores [Q, k], gallery indices [Q, k]), best first."""
        ...


FineScorer = Callable[[Tensor, Tensor | None], Tensor]


def check_k(k: int, name: str = "k") -> int:
    """A shortlist length must be a positive integer (it is clipped to the gallery size later)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{name} must be a positive integer (shortlist length), got {k!r}")
    return k


class CosineIndex:
    """Exact stage-1 search: dot products of (normalised) queries with the gallery, chunked.

    Memory O(chunk x G); ties broken by gallery index, so it agrees with the metrics package.
    """

    def __init__(self, gallery: Tensor, chunk: int = 1024) -> None:
        self.gallery = gallery
        self.chunk = chunk

    def __len__(self) -> int:
        return int(self.gallery.shape[0])

    def search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        parts = [stable_top_k(score_block(q, self.gallery), k) for q in queries.split(self.chunk)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _fuse(global_scores: Tensor, fine_scores: Tensor, lam: float, global_weight: float) -> Tensor:
    return global_weight * global_scores + lam * fine_scores


def two_stage_search(
    queries: Tensor,
    query_rows: Tensor,
    index: Searcher,
    fine: FineScorer,
    k: int,
    lam: float = 1.0,
    global_weight: float = 1.0,
    top: int | None = None,
    chunk: int = 256,
) -> tuple[Tensor, Tensor]:
    """The served pipeline: stage-1 top-`k` from `index`, re-ranked by the fused score.

    queries [Q, D] global embeddings; query_rows [Q] their rows for `fine`. Returns the best `top`
    (default all k) of the shortlist: (fused scores [Q, top], gallery indices [Q, top]), ties by
    index; -1 (score -inf) where the index found fewer. Batched over `chunk` queries, no full
    score matrix is ever built.
    """
    check_k(k)
    out_scores, out_indices = [], []
    for start in range(0, queries.shape[0], chunk):
        scores, candidates = index.search(queries[start : start + chunk], k)
        scores, candidates = scores.to(queries.device), candidates.to(queries.device, torch.int64)
        valid = candidates >= 0
        safe = candidates.clamp(min=0)
        fused = _fuse(scores, fine(query_rows[start : start + chunk], safe), lam, global_weight)
        fused = fused.masked_fill(~valid, -torch.inf)
        values, order = stable_top_k(_order_by_index(fused, safe), min(top or k, fused.shape[1]))
        out_scores.append(values)
        out_indices.append(_index_sorted(safe).gather(1, order).masked_fill(values == -torch.inf, -1))
    return torch.cat(out_scores), torch.cat(out_indices)


def _order_by_index(values: Tensor, indices: Tensor) -> Tensor:
    """`values` [c, K] permuted so that their gallery `indices` are ascending (for stable tie-breaks)."""
    return values.gather(1, indices.argsort(dim=1, stable=True))


def _index_sorted(indices: Tensor) -> Tensor:
    return indices.sort(dim=1, stable=True).values


def two_stage_ranks(
    query_emb: Tensor,
    gallery_emb: Tensor,
    positive_index: Tensor,
    fine: FineScorer,
    k: int,
    lam: float = 1.0,
    global_weight: float = 1.0,
    index: Searcher | None = None,
    chunk_size: int | None = None,
) -> Tensor:
    """Exact 0-based ranks of each query's positives after two-stage re-ranking (see module doc).

    query_emb [Q, D], gallery_emb [G, D]: global embeddings (score = dot product); positive_index
    [Q, P] gallery indices of each query's positives, -1 padded; `fine` scores rows of this query
    set against rows of this gallery. `index`: the stage-1 search (None: exact, from the same
    score block the global ranks come from). Returns int64 [Q, P], -1 where padded. K is clipped
    to the gallery size; K < 1 is a UserError.
    """
    check_k(k)
    num_queries, num_gallery = query_emb.shape[0], gallery_emb.shape[0]
    k = min(k, num_gallery)
    positive_index = positive_index.to(device=query_emb.device, dtype=torch.int64)
    slots = max(1, positive_index.shape[1])
    chunk = resolve_chunk_size(chunk_size, num_queries, num_gallery * 40 + slots * k * 16)
    out = torch.full(positive_index.shape, -1, dtype=torch.int64, device=query_emb.device)
    if positive_index.shape[1] == 0:
        return out
    for start in range(0, num_queries, chunk):
        stop = min(start + chunk, num_queries)
        rows = torch.arange(start, stop, device=query_emb.device)
        block = score_block(query_emb[start:stop], gallery_emb)  # [c, G]
        if index is None:
            short_scores, shortlist = stable_top_k(block, k)
        else:
            short_scores, shortlist = index.search(query_emb[start:stop], k)
            short_scores = short_scores.to(block.device, block.dtype)
            shortlist = shortlist.to(block.device, torch.int64)
        listed = shortlist >= 0
        shortlist = shortlist.clamp(min=0)
        fused = _fuse(short_scores, fine(rows, shortlist), lam, global_weight)

        positives = positive_index[start:stop]
        valid = positives >= 0
        safe = positives.clamp(min=0)
        positive_global = block.gather(1, safe)  # [c, P]
        global_rank = ranks_in_block(block, positive_global, safe)

        same = (shortlist[:, None, :] == safe[:, :, None]) & listed[:, None, :]  # [c, P, K]
        in_list = same.any(-1)
        positive_fused = torch.where(same, fused[:, None, :], 0.0).sum(-1)
        before = shortlist[:, None, :] < safe[:, :, None]
        fused_rank = _count_ahead(fused[:, None, :], positive_fused[..., None], before, listed)
        listed_global = block.gather(1, shortlist)[:, None, :]
        listed_ahead = _count_ahead(listed_global, positive_global[..., None], before, listed)
        outside_rank = listed.sum(1, keepdim=True) + global_rank - listed_ahead
        out[start:stop] = torch.where(valid, torch.where(in_list, fused_rank, outside_rank), -1)
    return out


def _count_ahead(scores: Tensor, reference: Tensor, lower_index: Tensor, listed: Tensor) -> Tensor:
    """Per (query, positive): listed items scoring above the reference, or equal with a lower index."""
    ahead = (scores > reference) | ((scores == reference) & lower_index)
    return (ahead & listed[:, None, :]).sum(-1)


def exhaustive_ranks(positive_index: Tensor, fine: FineScorer, chunk_size: int = 64) -> Tensor:
    """Exact 0-based ranks of each query's positives when `fine` scores the whole gallery.

    positive_index [Q, P] (-1 padded); `fine(rows, None)` gives [c, G] per chunk of query rows.
    """
    positive_index = positive_index.to(torch.int64)
    out = torch.full(positive_index.shape, -1, dtype=torch.int64, device=positive_index.device)
    for start in range(0, positive_index.shape[0], chunk_size):
        stop = min(start + chunk_size, positive_index.shape[0])
        scores = fine(torch.arange(start, stop, device=positive_index.device), None)
        positives = positive_index[start:stop]
        safe = positives.clamp(min=0)
        ranks = ranks_in_block(scores, scores.gather(1, safe), safe)
        out[start:stop] = torch.where(positives >= 0, ranks, -1)
    return out


def exhaustive_search(
    query_rows: Tensor, fine: FineScorer, top: int, chunk: int = 64
) -> tuple[Tensor, Tensor]:
    """Top `top` of the whole gallery by the fine score alone: (scores, indices) [Q, top]."""
    parts = [stable_top_k(fine(rows, None), top) for rows in query_rows.split(chunk)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ------------------------------------------------------------------------ the token fine scorer

#: Elements of the similarity / gathered-token tensors a fine scorer may hold at once (~64 MB in float32).
_FINE_BUDGET = 1 << 24


def token_fine_scorer(
    text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, direction: str, pooling: WordPooling = MEAN
) -> FineScorer:
    """The max-over-image-tokens score pooled over words (`retrieval.token_scores`) as a `FineScorer`.

    text_tokens [M, L, D] and image_tokens [N, T, D] L2-normalised (any float dtype; computed in
    float32), text_mask [M, L] (nonzero = word). `direction` "t2i": queries are texts and the
    gallery images; "i2t": the reverse. Words are trimmed to the longest caption involved, and
    work is split so that the similarity tensor stays under ~16M elements.
    """
    if direction not in ("t2i", "i2t"):
        raise ValueError(f"direction must be t2i or i2t, got {direction!r}")
    mask = text_mask.bool()
    longest = max(1, int(mask.sum(1).max()))
    words, mask = text_tokens[:, :longest], mask[:, :longest]

    def t2i_pairs(text_rows: Tensor, image_rows: Tensor) -> Tensor:
        """Each query text [q] against its own candidate images [q, K]."""
        per_query = image_rows.shape[1] * image_tokens.shape[1] * (words.shape[1] + image_tokens.shape[2])
        out, step = [], _step(per_query)
        for s in range(0, text_rows.shape[0], step):
            t, i = text_rows[s : s + step], image_rows[s : s + step]
            sim = torch.einsum("qld,qknd->qkln", words[t].float(), image_tokens[i].float()).amax(-1)
            out.append(pooling(sim, mask[t][:, None, :]))
        return torch.cat(out)

    def i2t_pairs(image_rows: Tensor, text_rows: Tensor) -> Tensor:
        """Each query image [q] against its own candidate texts [q, K]."""
        per_query = text_rows.shape[1] * words.shape[1] * (image_tokens.shape[1] + words.shape[2])
        out, step = [], _step(per_query)
        for s in range(0, image_rows.shape[0], step):
            i, t = image_rows[s : s + step], text_rows[s : s + step]
            sim = torch.einsum("qkld,qnd->qkln", words[t].float(), image_tokens[i].float()).amax(-1)
            out.append(pooling(sim, mask[t]))
        return torch.cat(out)

    def matrix(text_rows: Tensor, image_rows: Tensor) -> Tensor:
        """Scores [len(text_rows), len(image_rows)] of every text against every image."""
        v = image_tokens[image_rows].float()
        step = _step(image_rows.numel() * words.shape[1] * v.shape[1])
        out = []
        for s in range(0, text_rows.numel(), step):
            t = text_rows[s : s + step]
            sim = torch.einsum("tld,ind->tiln", words[t].float(), v).amax(-1)
            out.append(pooling(sim, mask[t][:, None, :]))
        return torch.cat(out)

    def t2i(query_rows: Tensor, candidates: Tensor | None) -> Tensor:
        if candidates is None:
            return matrix(query_rows, torch.arange(image_tokens.shape[0], device=query_rows.device))
        return t2i_pairs(query_rows, candidates)

    def i2t(query_rows: Tensor, candidates: Tensor | None) -> Tensor:
        if candidates is None:
            return matrix(torch.arange(words.shape[0], device=query_rows.device), query_rows).T
        return i2t_pairs(query_rows, candidates)

    return t2i if direction == "t2i" else i2t


def _step(per_item: int) -> int:
    """How many items fit in the fine scorer's memory budget at once."""
    return max(1, _FINE_BUDGET // max(1, per_item))
