"""Pure split planning: every item exactly once, balanced slots, equal batch counts per rank."""

from __future__ import annotations

import itertools

import pytest

from datamodules.sharding import balanced_ranges, eval_plan, segments_for_range, train_plan

SHARD_SIZES = [[8, 8, 8, 3], [5], [1, 1, 1], [40, 40], [7, 0, 7], [10] * 13]


def _items(segments, sizes):
    offsets = list(itertools.accumulate([0, *sizes]))
    return [offsets[s.shard] + p for s in segments for p in range(s.lo, s.hi)]


def test_balanced_ranges():
    assert balanced_ranges(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert balanced_ranges(2, 4) == [(0, 1), (1, 2), (2, 2), (2, 2)]


def test_segments_wrap_around():
    sizes = [3, 4]
    assert _items(segments_for_range(5, 9, sizes), sizes) == [5, 6, 0, 1]
    assert _items(segments_for_range(2, 5, sizes, order=[1, 0]), sizes) == [5, 6, 0]
    with pytest.raises(ValueError):
        segments_for_range(0, 8, sizes)


@pytest.mark.parametrize("sizes", SHARD_SIZES)
@pytest.mark.parametrize(("world", "workers"), [(1, 0), (1, 2), (2, 0), (2, 3), (3, 2), (8, 4)])
def test_eval_plan_covers_everything_once(sizes, world, workers):
    plan = eval_plan(sizes, world, workers, batch_size=4)
    seen = sorted(i for slot in plan.segments for i in _items(slot, sizes))
    assert seen == list(range(sum(sizes)))
    assert [len(_items(slot, sizes)) for slot in plan.segments] == plan.counts
    assert max(plan.counts) - min(plan.counts) <= 1
    assert plan.batches_per_slot * 4 >= max(plan.counts)
    if sum(sizes) >= world * max(1, workers):
        assert min(plan.counts) > 0  # nobody empty-handed, even with fewer shards than slots


@pytest.mark.parametrize("sizes", [[8, 8, 8, 3], [40, 40], [10] * 13, [3, 9, 1, 20]])
@pytest.mark.parametrize("workers", [0, 1, 2, 3])
def test_train_plan_equal_full_batches_and_no_repeats(sizes, workers):
    batch = 4
    for epoch in range(3):
        plan = train_plan(sizes, workers, batch, seed=1, epoch=epoch)
        assert plan.total_batches == sum(plan.batches) == sum(sizes) // batch
        assert max(plan.batches) - min(plan.batches) <= 1  # workers share the batches evenly
        items = [i for slot in plan.segments for i in _items(slot, sizes)]
        assert len(items) == len(set(items)) == plan.total_batches * batch
        for slot, nb in zip(plan.segments, plan.batches, strict=True):
            assert len(_items(slot, sizes)) == nb * batch


def test_train_plan_changes_with_epoch_and_is_reproducible():
    sizes = [10] * 13
    a, b = train_plan(sizes, 2, 4, seed=0, epoch=0), train_plan(sizes, 2, 4, seed=0, epoch=1)
    assert a.order != b.order
    assert train_plan(sizes, 2, 4, seed=0, epoch=0) == a
