"""The chunked metrics against the naive full-matrix implementations in naive.py, on random data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from xmodal_bench.metrics import caption as caption_module
from xmodal_bench.metrics import (
    caption_metrics_from_ranks,
    caption_ranks,
    caption_retrieval,
    coco_1k,
    coco_5k,
    coco_retrieval,
    fold_bounds,
    person_metrics_from_ranks,
    person_ranks,
    person_retrieval,
    positive_ranks,
)
from xmodal_bench.metrics import chunking as chunking_module
from xmodal_bench.metrics import ranks as ranks_module

from .naive import (
    full_scores,
    naive_caption_metrics,
    naive_caption_ranks,
    naive_coco_1k,
    naive_person,
    quantised,
)


def caption_data(seed: int, num_images: int, dim: int, max_captions: int, levels: int, duplicates: int):
    """Images with 1..max_captions captions each (shuffled caption order), some duplicated rows."""
    g = torch.Generator().manual_seed(seed)
    images = quantised(g, num_images, dim, levels)
    counts = torch.randint(1, max_captions + 1, (num_images,), generator=g)
    owner = torch.repeat_interleave(torch.arange(num_images), counts)
    owner = owner[torch.randperm(owner.shape[0], generator=g)]
    texts = quantised(g, owner.shape[0], dim, levels)
    for _ in range(duplicates):  # exact copies: ties between different images / captions
        a, b = torch.randint(0, num_images, (2,), generator=g).tolist()
        images[b] = images[a]
        c, d = torch.randint(0, owner.shape[0], (2,), generator=g).tolist()
        texts[d] = texts[c]
    return images, texts, owner


def assert_metrics_close(got: dict, expected: dict) -> None:
    assert set(got) == set(expected)
    for key in expected:
        assert got[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-9), key


CAPTION_CASES = [
    # seed, images, dim, max captions, quantisation levels (1 = heavy ties), duplicates, chunk
    (0, 1, 4, 3, 1, 0, None),
    (1, 7, 4, 1, 1, 2, 1),
    (2, 13, 8, 5, 1, 3, 3),
    (3, 29, 8, 4, 2, 4, 7),
    (4, 40, 16, 5, 100, 0, 9),
    (5, 33, 6, 3, 1, 6, 32),
    (6, 50, 12, 6, 3, 5, None),
    (7, 17, 3, 2, 1, 3, 1000),
    (8, 64, 16, 5, 50, 4, 16),
    (9, 21, 2, 4, 1, 0, 4),
]


@pytest.mark.parametrize(("seed", "n", "dim", "max_caps", "levels", "dups", "chunk"), CAPTION_CASES)
def test_caption_ranks_match_naive(seed, n, dim, max_caps, levels, dups, chunk):
    images, texts, owner = caption_data(seed, n, dim, max_caps, levels, dups)
    i2t, t2i = caption_ranks(images, texts, owner, chunk_size=chunk)
    ref_i2t, ref_t2i = naive_caption_ranks(full_scores(images, texts), owner)
    assert i2t.dtype == t2i.dtype == torch.int64
    np.testing.assert_array_equal(i2t.numpy(), ref_i2t)
    np.testing.assert_array_equal(t2i.numpy(), ref_t2i)
    assert_metrics_close(caption_metrics_from_ranks(i2t, t2i), naive_caption_metrics(ref_i2t, ref_t2i))
    assert_metrics_close(
        caption_retrieval(images, texts, owner, chunk_size=chunk), naive_caption_metrics(ref_i2t, ref_t2i)
    )


@pytest.mark.parametrize("in_order", [True, False])
@pytest.mark.parametrize("tile", [1, 7, 64])
def test_caption_small_tiles_are_exact(monkeypatch, in_order, tile):
    """Tiles far smaller than the matrix (many column tiles left and right of every diagonal
    block), heavy ties and duplicates, captions in owner order or shuffled: ranks stay exact."""
    monkeypatch.setattr(chunking_module, "CPU_TILE_ELEMENTS", tile)
    monkeypatch.setattr(caption_module, "FUSED_CPU_TILE_ELEMENTS", tile)  # the fused kernel's tiles
    for seed, chunk in ((11, 1), (12, 4), (13, None)):
        images, texts, owner = caption_data(seed, 23, 4, 4, 1, 6)
        if in_order:
            order = torch.argsort(owner, stable=True)
            texts, owner = texts[order], owner[order]
        i2t, t2i = caption_ranks(images, texts, owner, chunk_size=chunk)
        ref_i2t, ref_t2i = naive_caption_ranks(full_scores(images, texts), owner)
        np.testing.assert_array_equal(i2t.numpy(), ref_i2t)
        np.testing.assert_array_equal(t2i.numpy(), ref_t2i)


def test_caption_ties_with_unquantised_duplicates():
    """Random (non-exact) floats with duplicated images and captions: ranks must be exact with
    respect to the score matrix the chunks actually compute."""
    g = torch.Generator().manual_seed(21)
    n, dim, chunk = 37, 32, 8
    images = torch.nn.functional.normalize(torch.randn(n, dim, generator=g), dim=1)
    images[30:] = images[:7]  # the copies land in later chunks than the originals
    images[3] = images[36]
    owner = torch.arange(3 * n) // 3  # sorted: the implementation scores the columns in this order
    texts = torch.nn.functional.normalize(images[owner] + 0.3 * torch.randn(3 * n, dim, generator=g), dim=1)
    texts[50:60] = texts[0:10]
    scores = torch.cat([images[a : a + chunk] @ texts.T for a in range(0, n, chunk)])
    ref_i2t, ref_t2i = naive_caption_ranks(scores, owner)
    i2t, t2i = caption_ranks(images, texts, owner, chunk_size=chunk)
    np.testing.assert_array_equal(i2t.numpy(), ref_i2t)
    np.testing.assert_array_equal(t2i.numpy(), ref_t2i)


def test_caption_never_builds_the_full_matrix(monkeypatch):
    """Every score entry is computed exactly once, in tiles no larger than the tile budget."""
    shapes = []
    real = ranks_module.score_block

    def recording(queries, gallery):
        shapes.append((queries.shape[0], gallery.shape[0]))
        return real(queries, gallery)

    monkeypatch.setattr(caption_module, "score_block", recording)
    monkeypatch.setattr(chunking_module, "CPU_TILE_ELEMENTS", 60)
    images, texts, owner = caption_data(31, 40, 8, 5, 2, 0)
    caption_ranks(images, texts, owner, chunk_size=6)
    m = texts.shape[0]
    assert sum(rows * cols for rows, cols in shapes) == 40 * m  # one pass over the matrix
    assert all(rows <= 6 for rows, _ in shapes)
    off_diagonal = shapes[7:]  # ceil(40 / 6) diagonal blocks come first
    assert all(rows * cols <= 60 for rows, cols in off_diagonal)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_caption_input_dtypes(dtype):
    images, texts, owner = caption_data(41, 19, 8, 3, 1, 3)
    expected = caption_ranks(images, texts, owner, chunk_size=5)
    got = caption_ranks(images.to(dtype), texts.to(dtype), owner, chunk_size=5)
    np.testing.assert_array_equal(got[0].numpy(), expected[0].numpy())
    np.testing.assert_array_equal(got[1].numpy(), expected[1].numpy())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_matches_cpu(dtype):
    images, texts, owner = caption_data(51, 300, 16, 5, 1, 20)
    cpu = caption_ranks(images, texts, owner, chunk_size=64)
    gpu = caption_ranks(images.cuda().to(dtype), texts.cuda().to(dtype), owner.cuda(), chunk_size=64)
    assert gpu[0].is_cuda
    np.testing.assert_array_equal(gpu[0].cpu().numpy(), cpu[0].numpy())
    np.testing.assert_array_equal(gpu[1].cpu().numpy(), cpu[1].numpy())
    pids = owner % 37
    gallery = torch.arange(300) % 37
    ranks_cpu = person_ranks(texts, images, pids, gallery, chunk_size=33)
    ranks_gpu = person_ranks(
        texts.cuda().to(dtype), images.cuda().to(dtype), pids.cuda(), gallery.cuda(), chunk_size=33
    )
    np.testing.assert_array_equal(ranks_gpu.cpu().numpy(), ranks_cpu.numpy())


@pytest.mark.parametrize("n", [5, 9, 23, 31, 52])
def test_coco_1k_uneven_folds_match_naive(n):
    images, texts, owner = caption_data(60 + n, n, 6, 5, 1, 3)
    assert [b - a for a, b in fold_bounds(n)] == [len(f) for f in np.array_split(np.arange(n), 5)]
    got = coco_1k(images, texts, owner, chunk_size=4)
    assert_metrics_close(got, naive_coco_1k(images, texts, owner))
    both = coco_retrieval(images, texts, owner, chunk_size=3)
    assert_metrics_close({k[3:]: v for k, v in both.items() if k.startswith("1k/")}, got)
    assert_metrics_close(
        {k[3:]: v for k, v in both.items() if k.startswith("5k/")}, coco_5k(images, texts, owner)
    )


def person_data(seed: int, num_images: int, num_texts: int, num_pids: int, dim: int, levels: int):
    g = torch.Generator().manual_seed(seed)
    image_pids = torch.randint(0, num_pids, (num_images,), generator=g) * 3 + 100  # sparse, large ids
    text_pids = image_pids[torch.randint(0, num_images, (num_texts,), generator=g)]
    images = quantised(g, num_images, dim, levels)
    texts = quantised(g, num_texts, dim, levels)
    texts[: num_texts // 4] = texts[num_texts // 4 : 2 * (num_texts // 4)]
    images[: num_images // 5] = images[num_images - num_images // 5 :]
    return texts, images, text_pids, image_pids


PERSON_CASES = [
    # seed, gallery, queries, pids, dim, levels, chunk
    (0, 10, 12, 3, 4, 1, 1),
    (1, 30, 41, 4, 6, 1, 7),  # ~8 positives per query: more than one slot block
    (2, 45, 50, 2, 8, 2, None),  # ~22 positives per query
    (3, 60, 33, 20, 16, 100, 10),
    (4, 25, 64, 25, 3, 1, 64),
]


@pytest.mark.parametrize(("seed", "n", "m", "pids", "dim", "levels", "chunk"), PERSON_CASES)
def test_person_matches_naive_irra(seed, n, m, pids, dim, levels, chunk):
    texts, images, text_pids, image_pids = person_data(seed, n, m, pids, dim, levels)
    expected, expected_ranks = naive_person(full_scores(texts, images), text_pids, image_pids)
    ranks = person_ranks(texts, images, text_pids, image_pids, chunk_size=chunk)
    for row, ref in zip(ranks, expected_ranks, strict=True):
        np.testing.assert_array_equal(row[row >= 0].numpy(), ref)
        assert bool((row[len(ref) :] == -1).all())
    assert_metrics_close(person_retrieval(texts, images, text_pids, image_pids, chunk_size=chunk), expected)
    ragged = [row[row >= 0].flip(0) for row in ranks]  # unsorted ragged form
    assert_metrics_close(person_metrics_from_ranks(ragged), expected)


def test_positive_ranks_generic_matches_stable_sort():
    g = torch.Generator().manual_seed(5)
    queries, gallery = quantised(g, 17, 5, 1), quantised(g, 23, 5, 1)
    index = torch.randint(-1, 23, (17, 4), generator=g)
    got = positive_ranks(queries, gallery, index, chunk_size=5)
    scores = full_scores(queries, gallery)
    for q in range(17):
        order = torch.sort(scores[q], descending=True, stable=True).indices
        position = torch.empty_like(order)
        position[order] = torch.arange(23)
        expected = torch.where(index[q] >= 0, position[index[q].clamp(min=0)], -1)
        np.testing.assert_array_equal(got[q].numpy(), expected.numpy())


def test_person_hit_rate_matches_torchmetrics_on_shifted_scores():
    """Second oracle: torchmetrics' RetrievalHitRate over all (query, gallery) pairs, with the scores
    shifted to be positive (it ignores positives scoring <= 0) and continuous (no ties)."""
    from torchmetrics.retrieval import RetrievalHitRate

    g = torch.Generator().manual_seed(77)
    images = torch.nn.functional.normalize(torch.randn(40, 16, generator=g), dim=1)
    image_pids = torch.arange(40) // 3
    text_pids = image_pids[torch.randint(0, 40, (30,), generator=g)]
    texts = torch.nn.functional.normalize(images[text_pids * 3] + torch.randn(30, 16, generator=g), dim=1)
    got = person_retrieval(texts, images, text_pids, image_pids, chunk_size=7)
    scores = full_scores(texts, images) + 2.0
    target = text_pids[:, None] == image_pids[None, :]
    query = torch.arange(30)[:, None].expand(30, 40)
    for k in (1, 5, 10):
        hit_rate = RetrievalHitRate(top_k=k)(scores.flatten(), target.flatten(), indexes=query.flatten())
        assert got[f"r{k}"] == pytest.approx(100 * float(hit_rate), abs=1e-4)


@pytest.mark.parametrize("threads", [1, 3])
def test_caption_ranks_same_with_any_thread_count(threads):
    """The tile workers (one per torch thread on CPU) give the same exact ranks; the thread setting
    is restored afterwards."""
    images, texts, owner = caption_data(71, 57, 6, 5, 2, 4)
    ref_i2t, ref_t2i = naive_caption_ranks(full_scores(images, texts), owner)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        i2t, t2i = caption_ranks(images, texts, owner, chunk_size=4)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    np.testing.assert_array_equal(i2t.numpy(), ref_i2t)
    np.testing.assert_array_equal(t2i.numpy(), ref_t2i)


def test_auto_score_dtype_is_fp32_on_cpu():
    from xmodal_bench.metrics import resolve_score_dtype

    assert resolve_score_dtype("auto", torch.device("cpu")) == torch.float32
    images, texts, owner = caption_data(72, 20, 8, 3, 1, 2)
    auto = caption_ranks(images, texts, owner, score_dtype="auto")
    default = caption_ranks(images, texts, owner)
    assert all(torch.equal(a, b) for a, b in zip(auto, default, strict=True))
