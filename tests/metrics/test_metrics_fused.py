"""The fused compare-and-count kernel: the same counts as torch's comparisons, and the caption
ranks through it equal to the naive full-matrix implementation (and to the torch path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodal_bench.metrics import caption as caption_module
from xmodal_bench.metrics import caption_ranks, fused

from .naive import full_scores, naive_caption_ranks
from .test_metrics_oracle import CAPTION_CASES, caption_data

pytestmark = pytest.mark.skipif(not fused.available(), reason="no C compiler: the torch path is used")


@pytest.fixture
def torch_path():
    """Run with the kernel disabled, then enable it again."""
    fused.set_enabled(False)
    yield
    fused.set_enabled(True)


@pytest.mark.parametrize("row_ge", [False, True])
@pytest.mark.parametrize("col_ge", [False, True])
@pytest.mark.parametrize(("rows", "cols"), [(1, 1), (3, 17), (33, 65), (64, 1000)])
def test_kernel_counts_equal_torch_comparisons(row_ge, col_ge, rows, cols):
    g = torch.Generator().manual_seed(rows * cols)
    wide = torch.randint(-3, 4, (rows, cols + 5), generator=g).float() / 4  # heavy ties
    scores = wide[:, 2 : 2 + cols]  # rows strided: a slice of a larger tile
    row_thr = torch.randint(-3, 4, (rows,), generator=g).float() / 4
    col_thr = torch.randint(-3, 4, (cols,), generator=g).float() / 4
    row_counts = torch.full((rows,), 7, dtype=torch.int64)
    col_counts = torch.full((cols,), 5, dtype=torch.int64)
    assert fused.count_tile(scores, row_thr, col_thr, row_ge, col_ge, row_counts, col_counts)
    row_op = torch.ge if row_ge else torch.gt
    col_op = torch.ge if col_ge else torch.gt
    assert torch.equal(row_counts, 7 + row_op(scores, row_thr[:, None]).sum(1))
    assert torch.equal(col_counts, 5 + col_op(scores, col_thr[None, :]).sum(0))


def test_kernel_refuses_what_it_cannot_count():
    scores = torch.zeros(4, 6)
    counts = torch.zeros(4, dtype=torch.int64), torch.zeros(6, dtype=torch.int64)
    assert not fused.count_tile(scores.double(), torch.zeros(4), torch.zeros(6), True, True, *counts)
    assert not fused.count_tile(scores.T, torch.zeros(6), torch.zeros(4), True, True, *counts[::-1])
    with pytest.raises(ValueError):
        fused.count_tile(scores, torch.zeros(4), torch.zeros(5), True, True, *counts)


def _in_order(images, texts, owner):
    order = torch.argsort(owner, stable=True)
    return images, texts[order], owner[order]


@pytest.mark.parametrize(("seed", "n", "dim", "max_caps", "levels", "dups", "chunk"), CAPTION_CASES)
@pytest.mark.parametrize("tile", [1, 7, 64, None])
def test_fused_caption_ranks_match_naive(monkeypatch, seed, n, dim, max_caps, levels, dups, chunk, tile):
    """Captions in owner order (the kernel's path), heavy ties, duplicates, tiny to whole tiles."""
    if tile is not None:
        monkeypatch.setattr(caption_module, "FUSED_CPU_TILE_ELEMENTS", tile)
    images, texts, owner = _in_order(*caption_data(seed, n, dim, max_caps, levels, dups))
    i2t, t2i = caption_ranks(images, texts, owner, chunk_size=chunk)
    ref_i2t, ref_t2i = naive_caption_ranks(full_scores(images, texts), owner)
    np.testing.assert_array_equal(i2t.numpy(), ref_i2t)
    np.testing.assert_array_equal(t2i.numpy(), ref_t2i)


def test_fused_and_torch_paths_agree(torch_path):
    """Larger, realistic scores: the kernel and the torch comparisons give the same ranks."""
    g = torch.Generator().manual_seed(0)
    images = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=-1)
    owner = torch.arange(1500) // 5
    texts = torch.nn.functional.normalize(images[owner] + 0.8 * torch.randn(1500, 32, generator=g), dim=-1)
    slow = caption_ranks(images, texts, owner)
    fused.set_enabled(True)
    calls = []
    original = fused.count_tile
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fused, "count_tile", lambda *a: calls.append(1) or original(*a))
        mp.setattr(caption_module, "FUSED_CPU_TILE_ELEMENTS", 4096)
        fast = caption_ranks(images, texts, owner)
    assert calls, "the fused kernel was not used"
    assert all(torch.equal(a, b) for a, b in zip(slow, fast, strict=True))


def test_disabled_kernel_is_not_available(torch_path):
    assert not fused.available()
