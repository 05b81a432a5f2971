"""Caption protocol (COCO, Flickr30K, synth): image->text and text->image retrieval.

Both directions come from one pass over the image x caption score matrix, every entry computed
exactly once, one cache-sized tile at a time (memory O(tile), never the full matrix). With the
captions ordered by owner image, the captions of a chunk of images are one contiguous column
range, its *diagonal block*; every positive pair lies in a diagonal block. The pass has two
phases:

1. Diagonal blocks, chunk by chunk: the exact positive score of every caption (its owner's
   entry) and, per image, its best own caption (highest score, then lowest caption index). The
   ranks' contributions from inside the diagonal blocks are counted at the same time.
2. Off-diagonal tiles: everything needed to compare is now known, so each tile adds two counts
   and is dropped: per image row, entries above its best own caption (image->text), and per
   caption column, entries above its positive score (text->image).

Ties follow a stable sort: for text->image, an image before the owner counts when its score is
>= the positive (left of the diagonal block every row is after the owner's: >, right of it
before: >=); for image->text, a caption with a lower index than the best own caption counts on
a tie. When the captions came in owner order (the usual case), caption index order is column
order, so that is again one comparison per tile (>= left of the diagonal, > right of it);
otherwise ties are resolved where an equal score occurs. Because every compared value is the
single computed entry, ranks are exact with respect to the computed scores, whatever the tiling.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from xmodal_bench.metrics import fused
from xmodal_bench.metrics._checks import check_embeddings, check_owner_index, check_pair
from xmodal_bench.metrics.chunking import FUSED_CPU_TILE_ELEMENTS, resolve_score_dtype, tile_shape
from xmodal_bench.metrics.parallel import cpu_workers, one_intra_op_thread, run_tasks
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


def caption_ranks(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype | str = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Exact 0-based ranks for both directions of the caption protocol.

    image_emb [N, D], text_emb [M, D] (callers L2-normalise; score = dot product computed in
    `score_dtype`; "auto" = bf16/fp16 on CUDA, fp32 on CPU), text_to_image [M] the image index of
    each caption (every image needs >= 1).
    Returns (i2t_ranks [N], t2i_ranks [M]), int64 on the inputs' device. Ties are broken by
    index as a stable descending sort would. `chunk_size` = images per score tile (None: a
    tile sized for the device, see `chunking.tile_shape`).
    """
    check_embeddings("image embeddings", image_emb)
    check_embeddings("text embeddings", text_emb)
    check_pair("text embeddings", text_emb, "image embeddings", image_emb)
    device = image_emb.device
    num_images, num_texts = image_emb.shape[0], text_emb.shape[0]
    owner = check_owner_index(text_to_image, num_texts, num_images, device)
    score_dtype = resolve_score_dtype(score_dtype, device)
    images = image_emb.to(score_dtype)

    # Work on the captions sorted by owner (stable); `caption_id` maps a column back to its index.
    in_order = bool((owner[1:] >= owner[:-1]).all())
    # In owner order, off-diagonal tiles are counted by the fused kernel when it is built.
    use_fused = in_order and score_dtype == torch.float32 and device.type == "cpu" and fused.available()
    cpu_elements = FUSED_CPU_TILE_ELEMENTS if use_fused else None
    chunk, width = tile_shape(
        chunk_size, num_images, num_texts, device, torch.finfo(score_dtype).bits // 8, cpu_elements
    )
    if in_order:
        caption_id = torch.arange(num_texts, device=device)
        texts = text_emb.to(score_dtype)
    else:
        caption_id = torch.argsort(owner, stable=True)
        texts = text_emb[caption_id].to(score_dtype)
        owner = owner[caption_id]
    starts = list(range(0, num_images, chunk))
    bounds = torch.searchsorted(owner, torch.tensor([*starts, num_images], device=device)).tolist()
    workers = cpu_workers(device)
    states = [_Worker(device, chunk * width, num_texts) for _ in range(workers)]
    positive = torch.empty(num_texts, dtype=score_dtype, device=device)
    best = torch.empty(num_images, dtype=score_dtype, device=device)
    best_id = torch.empty(num_images, dtype=torch.int64, device=device)
    i2t = torch.zeros(num_images, dtype=torch.int64, device=device)

    def diagonal(k: int, state: _Worker) -> None:
        """Phase 1: positive scores, best own captions and in-block counts of chunk k."""
        start, stop, low, high = starts[k], min(starts[k] + chunk, num_images), bounds[k], bounds[k + 1]
        block = _DiagonalBlock(
            score_block(images[start:stop], texts[low:high]), start, owner[low:high], caption_id[low:high]
        )
        positive[low:high], best[start:stop], best_id[start:stop] = block.extremes()
        i2t[start:stop], rows_counts = block.counts(state.count)
        state.t2i[low:high] += rows_counts

    def off_diagonal(k: int, state: _Worker) -> None:
        """Phase 2: chunk k's rows against the captions of earlier (left) and later (right) chunks."""
        start, stop, low, high = starts[k], min(starts[k] + chunk, num_images), bounds[k], bounds[k + 1]
        rows, count = images[start:stop], state.count
        row_best, row_best_id = best[start:stop, None], best_id[start:stop, None]
        for left, (a, b) in ((True, (0, low)), (False, (high, num_texts))):
            for col in range(a, b, width):
                end = min(col + width, b)
                scores = score_block(rows, texts[col:end])
                # Both counts below in one pass over the tile (the same comparisons, see `fused`).
                if use_fused and fused.count_tile(
                    scores, best[start:stop], positive[col:end], left, not left, i2t[start:stop],
                    state.t2i[col:end],
                ):  # fmt: skip
                    continue
                # image -> text: on a tie a lower caption index counts (all of them left, in order).
                if in_order:
                    i2t[start:stop] += count(torch.ge if left else torch.gt, scores, row_best, 1)
                else:
                    i2t[start:stop] += _row_counts_with_ties(
                        count, scores, row_best, row_best_id, caption_id[col:end]
                    )
                # text -> image: rows after the owner (left) count when >, before it (right) when >=.
                state.t2i[col:end] += count(torch.gt if left else torch.ge, scores, positive[col:end], 0)

    with one_intra_op_thread(workers > 1):
        run_tasks(range(len(starts)), diagonal, states)  # every phase-2 tile needs all of phase 1
        run_tasks(range(len(starts)), off_diagonal, states)
    t2i = states[0].t2i
    for state in states[1:]:
        t2i += state.t2i
    out = torch.empty_like(t2i)
    out[caption_id] = t2i
    return i2t, out


class _Worker:
    """What one tile thread owns: its comparison buffer and its own text->image counts."""

    def __init__(self, device: torch.device, tile_elements: int, num_texts: int) -> None:
        self.count = _Counter(device, tile_elements)
        self.t2i = torch.zeros(num_texts, dtype=torch.int64, device=device)


class _Counter:
    """`count(op, scores, threshold, dim)`: how many entries of `op(scores, threshold)` hold, along `dim`.

    On CPU the comparison writes 0/1 into a reused float32 buffer: several times faster than
    producing a bool mask (measured in benchmarks/perf), and exact because a CPU tile has fewer
    than 2**24 elements per reduction. Elsewhere it is the plain bool mask and an integer sum.
    """

    def __init__(self, device: torch.device, tile_elements: int) -> None:
        self.buffer = None
        if device.type == "cpu" and tile_elements < 2**24:  # float32 counts are exact below 2**24
            self.buffer = torch.empty(tile_elements, dtype=torch.float32)

    def __call__(self, op, scores: Tensor, threshold: Tensor, dim: int) -> Tensor:
        if self.buffer is None or scores.numel() > self.buffer.numel():
            return op(scores, threshold).sum(dim)
        hits = op(scores, threshold, out=self.buffer[: scores.numel()].view(scores.shape))
        return hits.sum(dim).long()


class _DiagonalBlock:
    """A chunk of images against the captions they own (sorted by owner): where every positive lies."""

    def __init__(self, scores: Tensor, start: int, owner: Tensor, caption_id: Tensor) -> None:
        self.scores, self.start, self.owner, self.caption_id = scores, start, owner, caption_id
        self.local = owner - start  # row of each column's owner in this block
        self.positive = scores[self.local, torch.arange(owner.shape[0], device=scores.device)]
        rows = scores.shape[0]
        self.best = torch.full((rows,), -torch.inf, dtype=scores.dtype, device=scores.device)
        self.best.scatter_reduce_(0, self.local, self.positive, "amax")
        never = torch.iinfo(torch.int64).max
        candidates = torch.where(self.positive == self.best[self.local], caption_id, never)
        self.best_id = torch.full((rows,), never, dtype=torch.int64, device=scores.device)
        self.best_id.scatter_reduce_(0, self.local, candidates, "amin")

    def extremes(self) -> tuple[Tensor, Tensor, Tensor]:
        """(positive score per caption, best own score per image, index of that caption)."""
        return self.positive, self.best, self.best_id

    def counts(self, count: _Counter) -> tuple[Tensor, Tensor]:
        """Rank contributions of the block: (per image row, per caption column)."""
        scores, best, positive = self.scores, self.best[:, None], self.positive
        i2t = count(torch.gt, scores, best, 1)
        tied = torch.nonzero(count(torch.eq, scores, best, 1) > 1).squeeze(1)
        if tied.numel():  # captions as good as the best own one, with a lower index
            equal = scores[tied] == best[tied]
            i2t[tied] += (equal & (self.caption_id < self.best_id[tied, None])).sum(1)
        t2i = count(torch.gt, scores, positive, 0)
        tied = torch.nonzero(count(torch.eq, scores, positive, 0) > 1).squeeze(1)
        if tied.numel():  # images as good as the owner, before it
            equal = scores[:, tied] == positive[tied]
            rows = torch.arange(scores.shape[0], device=scores.device)[:, None]
            t2i[tied] += (equal & (rows < self.local[tied])).sum(0)
        return i2t, t2i


def _row_counts_with_ties(
    count: _Counter, scores: Tensor, row_best: Tensor, row_best_id: Tensor, caption_id: Tensor
) -> Tensor:
    """Per row: entries above the row's best own caption, plus equal ones with a lower caption index."""
    counts = count(torch.gt, scores, row_best, 1)
    tied = torch.nonzero(count(torch.eq, scores, row_best, 1) > 0).squeeze(1)
    if tied.numel():
        equal = scores[tied] == row_best[tied]
        counts[tied] += (equal & (caption_id < row_best_id[tied])).sum(1)
    return counts


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
    score_dtype: torch.dtype | str = torch.float32,
) -> dict[str, float]:
    """The caption protocol's metrics (`CAPTION_METRIC_NAMES`) for one image/caption set."""
    i2t, t2i = caption_ranks(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    return caption_metrics_from_ranks(i2t, t2i)
