"""Who reads what: pure functions that split a split's items over (rank, DataLoader worker) slots.

An *item* is an image (eval image stream) or a caption (train stream, eval caption stream).
Items are numbered in the virtual concatenation of the shards in a given order; a slot receives a
contiguous range of that numbering, which `segments_for_range` turns into per-shard
`Segment(shard, lo, hi)` pieces (positions inside the shard). Evaluation slots are (rank, worker)
pairs: every item is read once over all ranks. Training slots are workers only: every rank reads
the same global batches and keeps its slice of each (`train_plan`). So:

- with many shards, a slot reads a contiguous run of whole shards (the sorted shard list is split
  across ranks, then within a rank across workers) and at most two shards are shared with a
  neighbour slot;
- with fewer shards than slots the same rule becomes a sample-level split: several slots read the
  same shard, each keeping its own range of positions (they skip the others without decoding), so
  no slot is ever empty-handed while there are at least as many items as slots;
- ranges are balanced to within one item, so padding is at most one batch per slot.

Evaluation slots are numbered rank-major: `slot = rank * workers + worker`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "EvalPlan",
    "Segment",
    "TrainPlan",
    "balanced_ranges",
    "eval_plan",
    "segments_for_range",
    "train_plan",
]


@dataclass(frozen=True)
class Segment:
    """Items `lo <= position < hi` of shard number `shard` (index into the split's shard list)."""

    shard: int
    lo: int
    hi: int

    @property
    def size(self) -> int:
        return self.hi - self.lo


def balanced_ranges(total: int, parts: int) -> list[tuple[int, int]]:
    """Split `range(total)` into `parts` contiguous ranges whose sizes differ by at most one."""
    if parts < 1:
        raise ValueError("parts must be >= 1")
    base, extra = divmod(total, parts)
    out, lo = [], 0
    for i in range(parts):
        hi = lo + base + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def segments_for_range(
    lo: int, hi: int, sizes: Sequence[int], order: Sequence[int] | None = None
) -> list[Segment]:
    """Items `[lo, hi)` of the concatenation of shards taken in `order` (default: 0..n-1), per shard.

    Positions past the end wrap around to the start (used by the train stream's random rotation).
    """
    order = list(range(len(sizes))) if order is None else list(order)
    total = sum(sizes[j] for j in order)
    if hi <= lo or total == 0:
        return []
    if hi - lo > total:
        raise ValueError(f"range of {hi - lo} items is longer than the {total} available")
    lo_mod = lo % total
    hi_mod = lo_mod + (hi - lo)
    if hi_mod > total:  # wraps: two pieces
        return segments_for_range(lo_mod, total, sizes, order) + segments_for_range(
            0, hi_mod - total, sizes, order
        )
    out, offset = [], 0
    for j in order:
        n = sizes[j]
        a, b = max(lo_mod, offset), min(hi_mod, offset + n)
        if a < b:
            out.append(Segment(j, a - offset, b - offset))
        offset += n
        if offset >= hi_mod:
            break
    return out


@dataclass(frozen=True)
class EvalPlan:
    """Per slot: the segments to read and the real item count; every slot yields `batches_per_slot` batches."""

    segments: list[list[Segment]]
    counts: list[int]
    batches_per_slot: int
    workers: int  # DataLoader workers per rank the plan was made for (>= 1)

    def slot(self, rank: int, worker: int) -> int:
        return rank * self.workers + worker


def eval_plan(sizes: Sequence[int], world_size: int, workers: int, batch_size: int) -> EvalPlan:
    """Every item exactly once over all slots, in sorted shard order, ranks then workers contiguous.

    All slots are padded to the same number of batches, so every rank yields
    `workers * batches_per_slot` batches.
    """
    if world_size < 1 or batch_size < 1:
        raise ValueError("world_size and batch_size must be >= 1")
    workers = max(1, workers)
    segments, counts = [], []
    for rank_lo, rank_hi in balanced_ranges(sum(sizes), world_size):
        for a, b in balanced_ranges(rank_hi - rank_lo, workers):
            segments.append(segments_for_range(rank_lo + a, rank_lo + b, sizes))
            counts.append(b - a)
    batches = math.ceil(max(counts) / batch_size) if counts else 0
    return EvalPlan(segments=segments, counts=counts, batches_per_slot=batches, workers=workers)


@dataclass(frozen=True)
class TrainPlan:
    """Per DataLoader worker: the segments to read; worker `w` yields exactly `batches[w]` full
    *global* batches (every rank reads the same plan and keeps its slice of each batch)."""

    segments: list[list[Segment]]
    batches: list[int]
    total_batches: int
    workers: int
    order: list[int]  # the epoch's shard order


def train_plan(sizes: Sequence[int], workers: int, batch_size: int, seed: int, epoch: int) -> TrainPlan:
    """The epoch's shard order and each worker's share of full global batches (remainder dropped).

    The plan does not depend on the number of ranks: there are `sum(sizes) // batch_size` global
    batches (the remainder, fewer than `batch_size` captions, is dropped; which ones changes every
    epoch because the shard order is reshuffled and the starting point rotated at random), spread
    over the workers as evenly as possible, and every rank takes its slice of every global batch.
    So the sequence of global batches is the same at any world size (for a given worker count).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    workers = max(1, workers)
    total = sum(sizes)
    batches_total = total // batch_size
    rng = random.Random(f"train-plan/{seed}/{epoch}")
    order = list(range(len(sizes)))
    rng.shuffle(order)
    start = rng.randrange(total) if total else 0
    segments, batches = [], []
    offset = start
    for w in range(workers):
        nb = batches_total // workers + (1 if w < batches_total % workers else 0)
        n_items = nb * batch_size
        segments.append(segments_for_range(offset, offset + n_items, sizes, order))
        batches.append(nb)
        offset += n_items
    return TrainPlan(
        segments=segments, batches=batches, total_batches=batches_total, workers=workers, order=order
    )
