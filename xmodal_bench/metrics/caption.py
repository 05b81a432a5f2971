"""Caption protocol (COCO, Flickr30K, synth): image->text and text->image retrieval.

Both directions come from one pass over the image x caption score matrix, one chunk of images
at a time (memory O(chunk x M)), with the captions ordered by owner image so that the captions
of earlier, current and later chunks are three contiguous column ranges:
- image->text: an image's rank is the rank of its best own caption in its score row (the own
  caption a stable descending sort puts first), i.e. the minimum rank over its own captions.
- text->image: a caption's rank among all N images is accumulated column-wise across the
  chunks: rows before its owner count when score >= s_pos, rows after it when score > s_pos,
  where s_pos is the entry at the owner image.

Exact ties need s_pos to be *bit-identical* to the matrix entry, but the owner's row is only
computed when its chunk comes, and the same dot product computed by a matmul of another shape
can differ in the last bit. So the chunks before the owner's compare with a precomputed s~
(the diagonal of small matmuls of the same inputs) and remember the smallest |score - s~| they
saw. When the owner's chunk gives the true s_pos and s~ differs from it, any earlier entry that
could compare differently lies within |s_pos - s~| of s~; captions where one does get their
earlier chunks recounted, recomputing those chunks with the identical matmul call. In practice
that set is empty (on CPU s~ is usually bitwise equal) or tiny; the result is always exact.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from xmodal_bench.metrics._checks import check_embeddings, check_owner_index, check_pair
from xmodal_bench.metrics.chunking import resolve_chunk_size
from xmodal_bench.metrics.ranks import score_block

CAPTION_METRIC_NAMES = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "rsum",
    "i2t_medr",
    "t2i_medr",
    "i2t_meanr",
    "t2i_meanr",
)

#: Captions per matmul when approximating the positive scores (diagonal of a small square block).
_APPROX_BLOCK = 256
_COUNT = torch.int32  # counting in int32 is about twice as fast as the default int64 on CPU


def _approximate_positive_scores(images: Tensor, texts: Tensor, owner: Tensor) -> Tensor:
    """s~[c] = texts[c] . images[owner[c]], as the diagonal of square matmul blocks.

    A matmul (not an elementwise product) so that the rounding usually matches the chunk
    matmuls bit for bit; correctness does not depend on it.
    """
    out = torch.empty(texts.shape[0], dtype=texts.dtype, device=texts.device)
    for start in range(0, texts.shape[0], _APPROX_BLOCK):
        stop = min(start + _APPROX_BLOCK, texts.shape[0])
        out[start:stop] = torch.diagonal(score_block(images[owner[start:stop]], texts[start:stop]))
    return out


def caption_ranks(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Exact 0-based ranks for both directions of the caption protocol.

    image_emb [N, D], text_emb [M, D] (callers L2-normalise; score = dot product computed in
    `score_dtype`), text_to_image [M] the image index of each caption (every image needs >= 1).
    Returns (i2t_ranks [N], t2i_ranks [M]), int64 on the inputs' device. Ties are broken by
    index as a stable descending sort would. `chunk_size` = images per score block (None: from
    a memory budget).
    """
    check_embeddings("image embeddings", image_emb)
    check_embeddings("text embeddings", text_emb)
    check_pair("text embeddings", text_emb, "image embeddings", image_emb)
    device = image_emb.device
    num_images, num_texts = image_emb.shape[0], text_emb.shape[0]
    owner = check_owner_index(text_to_image, num_texts, num_images, device)
    images = image_emb.to(score_dtype)
    chunk = resolve_chunk_size(chunk_size, num_images, num_texts * 12)

    # Work on the captions sorted by owner (stable); `caption_id` maps a column back to its index.
    if bool((owner[1:] >= owner[:-1]).all()):
        caption_id = torch.arange(num_texts, device=device)
        texts = text_emb.to(score_dtype)
    else:
        caption_id = torch.argsort(owner, stable=True)
        texts = text_emb[caption_id].to(score_dtype)
        owner = owner[caption_id]
    approx = _approximate_positive_scores(images, texts, owner)
    positive = approx.clone()  # becomes the exact s_pos once the owner's chunk is scored
    prior_gap = torch.full_like(approx, torch.inf)  # min |score - s~| over chunks before the owner's

    i2t = torch.empty(num_images, dtype=torch.int64, device=device)
    t2i = torch.zeros(num_texts, dtype=torch.int64, device=device)
    early = torch.zeros(num_texts, dtype=torch.int64, device=device)  # counts from chunks before the owner's

    for start in range(0, num_images, chunk):
        stop = min(start + chunk, num_images)
        scores = score_block(images[start:stop], texts)  # [c, M]
        rows = torch.arange(start, stop, device=device)
        low = int(torch.searchsorted(owner, start))
        high = int(torch.searchsorted(owner, stop))  # this chunk's captions are columns [low, high)
        mine = scores[:, low:high]
        mine_owner = owner[low:high]

        # image -> text: the best own caption (highest score, then lowest caption index) and its rank.
        own = mine_owner == rows[:, None]
        best = torch.where(own, mine, -torch.inf).amax(1, keepdim=True)
        best_id = torch.where(own & (mine == best), caption_id[low:high], num_texts).amin(1, keepdim=True)
        i2t[start:stop] = (scores > best).sum(1, dtype=_COUNT)
        extra_ties = torch.nonzero((scores == best).sum(1, dtype=_COUNT) > 1).squeeze(1)
        if extra_ties.numel():
            tied = (scores[extra_ties] == best[extra_ties]) & (caption_id < best_id[extra_ties])
            i2t[start + extra_ties] += tied.sum(1)

        # text -> image, captions of earlier chunks: only rows after the owner, ties do not count.
        t2i[:low] += (scores[:, :low] > positive[:low]).sum(0, dtype=_COUNT)
        # this chunk's captions: exact positive scores from this block, rows before the owner count ties.
        positive[low:high] = mine[mine_owner - start, torch.arange(high - low, device=device)]
        p = positive[low:high]
        t2i[low:high] += ((mine > p) | ((mine == p) & (rows[:, None] < mine_owner))).sum(0, dtype=_COUNT)
        # captions of later chunks: every row is before the owner, ties count; s~ stands in for s_pos.
        later = scores[:, high:]
        counts = (later >= approx[high:]).sum(0, dtype=_COUNT)
        t2i[high:] += counts
        early[high:] += counts
        prior_gap[high:] = torch.minimum(prior_gap[high:], (later - approx[high:]).abs_().amin(0))

    # An earlier entry x compares differently with s~ and s_pos only if |x - s~| <= |s_pos - s~|.
    suspect = (positive != approx) & (prior_gap <= (positive - approx).abs())
    if bool(suspect.any()):
        t2i = _recount_early_chunks(images, texts, owner, positive, suspect, chunk, t2i, early)
    out = torch.empty_like(t2i)
    out[caption_id] = t2i
    return i2t, out


def _recount_early_chunks(
    images: Tensor,
    texts: Tensor,
    owner: Tensor,
    positive: Tensor,
    suspect: Tensor,
    chunk: int,
    t2i: Tensor,
    early: Tensor,
) -> Tensor:
    """Redo the chunks before each suspect caption's owner chunk against its exact positive score.

    The chunks are recomputed with the identical matmul call, so the entries are bit-identical to
    the first pass. Every row of an earlier chunk comes before the owner, so ties count.
    """
    columns = torch.nonzero(suspect).squeeze(1)
    col_owner, col_positive = owner[columns], positive[columns]
    recount = torch.zeros(columns.shape[0], dtype=torch.int64, device=t2i.device)
    last_start = (int(col_owner.max()) // chunk) * chunk
    for start in range(0, last_start, chunk):
        stop = min(start + chunk, images.shape[0])
        scores = score_block(images[start:stop], texts)[:, columns]
        recount += (scores >= col_positive).sum(0) * (col_owner >= stop)
    t2i = t2i.clone()
    t2i[columns] += recount - early[columns]
    return t2i


def _median(values: Tensor) -> float:
    """numpy's median: the mean of the two middle values for an even count."""
    ordered = torch.sort(values.double()).values
    n = ordered.shape[0]
    return float((ordered[(n - 1) // 2] + ordered[n // 2]) / 2)


def caption_metrics_from_ranks(i2t_ranks: Tensor, t2i_ranks: Tensor) -> dict[str, float]:
    """Recall@{1,5,10} (percent), rsum, median and mean rank (1-based) from 0-based ranks.

    i2t_ranks [N]: per image, the best rank of its own captions; t2i_ranks [M]: per caption, the
    rank of its image. medr = floor(median) + 1 and meanr = mean + 1, as the VSE reference code.
    This is also the entry point for re-rankers that compute ranks their own way.
    """
    out: dict[str, float] = {}
    for name, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        ranks = torch.as_tensor(ranks).flatten()
        if ranks.numel() == 0:
            raise ValueError(f"{name} ranks are empty")
        if bool((ranks < 0).any()):
            raise ValueError(f"{name} ranks must be >= 0 (0 = top)")
        ranks = ranks.double()
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = float((ranks < k).double().mean() * 100)
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    for name, ranks in (("i2t", i2t_ranks), ("t2i", t2i_ranks)):
        ranks = torch.as_tensor(ranks).flatten()
        out[f"{name}_medr"] = math.floor(_median(ranks)) + 1.0
        out[f"{name}_meanr"] = float(ranks.double().mean()) + 1.0
    return {key: out[key] for key in CAPTION_METRIC_NAMES}


def caption_retrieval(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> dict[str, float]:
    """The caption protocol's metrics (`CAPTION_METRIC_NAMES`) for one image/caption set."""
    i2t, t2i = caption_ranks(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    return caption_metrics_from_ranks(i2t, t2i)
