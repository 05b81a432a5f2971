"""Exact dot-product top-K lists, ties by lower gallery index (the order of a stable descending sort).

Used for the retrieved lists of the ECCV Caption / CxC metrics (`metrics.eccv`). On the CPU in
float32 with the C kernel (`topk_tile.c`, built like `metrics.fused`), both directions come
from one pass over image x caption score tiles: each tile is one matmul, and the kernel merges
its entries into running top-K lists of its image rows (image->text) and of its caption
columns (text->image), an entry costing one vector comparison unless it enters a list. That
halves the matmuls of one top-K pass per direction and replaces `torch.topk` (a partial sort of
every row) by that comparison. Tile threads run as in the caption protocol (`metrics.parallel`),
each with its own column lists, merged at the end. Every score is an entry of a matmul tile of
image rows against caption rows, the same floats the caption protocol's ranks compare.
Elsewhere (CUDA, half precision, no compiler): `torch.topk` per block of queries, per direction.
"""

from __future__ import annotations

import ctypes
import math
from pathlib import Path

import torch
from torch import Tensor

from xmodal_bench.metrics import fused
from xmodal_bench.metrics.chunking import resolve_chunk_size
from xmodal_bench.metrics.parallel import cpu_workers, one_intra_op_thread, run_tasks
from xmodal_bench.metrics.ranks import score_block

SOURCE = Path(__file__).resolve().with_name("topk_tile.c")
_ARGTYPES = [ctypes.c_void_p, *[ctypes.c_int64] * 5, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
_ARGTYPES += [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
_NO_INDEX = 2**31 - 1  # the kernel's sentinel index: a list slot never filled
#: Score-tile elements of the kernel pass (4 MiB of float32: read once, as in `metrics.fused`).
TILE_ELEMENTS = 2**20
#: Score-block elements per `torch.topk` call on the torch path (about 256 x 25K).
TORCH_BLOCK_ELEMENTS = 2**23


def _kernel():
    return fused.load_function(SOURCE, "xmb_topk_tile", _ARGTYPES)


def kernel_available() -> bool:
    """Whether the top-K tile kernel is built and loaded (builds it on the first call)."""
    return _kernel() is not None


def stable_top_k(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """(values [c, k], indices [c, k]) of each row's k highest scores, as a stable descending sort
    orders them: equal scores in index order, and the set follows the same rule at the k-th place."""
    k = min(k, scores.shape[1])
    extra = min(k + 1, scores.shape[1])  # one more: a tie at the k-th place shows as equal neighbours
    values, indices = scores.topk(extra, dim=1)
    redo = torch.nonzero((values[:, 1:] == values[:, :-1]).any(1)).squeeze(1)
    values, indices = values[:, :k], indices[:, :k]
    if redo.numel():  # ties: let a stable sort decide, as the ranks do
        order = torch.sort(scores[redo], dim=1, descending=True, stable=True).indices[:, :k]
        indices[redo] = order
        values[redo] = scores[redo].gather(1, order)
    return values, indices


def torch_top_k(queries: Tensor, gallery: Tensor, k: int, chunk_size: int | None = None) -> Tensor:
    """[Q, k] gallery rows of each query's k best scores (`queries @ gallery.T`), a block at a time."""
    chunk = resolve_chunk_size(
        chunk_size or max(1, TORCH_BLOCK_ELEMENTS // gallery.shape[0]), len(queries), 1
    )
    parts = [stable_top_k(score_block(part, gallery), k)[1] for part in queries.split(chunk)]
    return torch.cat(parts)


def _bounds(total: int, size: int) -> list[tuple[int, int]]:
    """[start, stop) ranges of about `size` covering `total`, balanced (no sliver at the end)."""
    parts = max(1, math.ceil(total / max(1, size)))
    step = math.ceil(total / parts)
    return [(start, min(start + step, total)) for start in range(0, total, step)]


def _empty_lists(n: int, k: int) -> tuple[Tensor, Tensor]:
    return torch.full((n, k), -torch.inf), torch.full((n, k), _NO_INDEX, dtype=torch.int32)


def _merge(values: list[Tensor], indices: list[Tensor], k: int) -> Tensor:
    """The first k of several sorted lists per row, in stable-sort order (score desc, index asc)."""
    if len(values) == 1:
        return indices[0].long()
    value, index = torch.cat(values, 1), torch.cat(indices, 1).long()
    by_index = torch.argsort(index, dim=1, stable=True)
    value, index = value.gather(1, by_index), index.gather(1, by_index)
    by_score = torch.sort(value, dim=1, descending=True, stable=True).indices[:, :k]
    return index.gather(1, by_score)


def kernel_top_k(
    images: Tensor, texts: Tensor, k_rows: int, k_cols: int, chunk_size: int | None = None
) -> tuple[Tensor, Tensor] | None:
    """(per image row its k_rows best caption rows [N, k_rows], per caption its k_cols best image
    rows [M, k_cols]) from one pass over `images @ texts.T` tiles (CPU float32; k <= gallery
    size; 0 leaves a direction out). None when the kernel is not available."""
    kernel = _kernel()
    if kernel is None:
        return None
    images, texts = images.contiguous(), texts.contiguous()
    num_images, num_texts = images.shape[0], texts.shape[0]
    rows = chunk_size or max(1, math.isqrt(TILE_ELEMENTS * num_images // max(1, num_texts)))
    row_blocks = _bounds(num_images, rows)
    col_blocks = _bounds(num_texts, max(1, TILE_ELEMENTS // (row_blocks[0][1] - row_blocks[0][0])))
    row_val, row_idx = _empty_lists(num_images, k_rows)
    workers = (
        cpu_workers(images.device) if k_cols else max(1, min(cpu_workers(images.device), len(row_blocks)))
    )
    states = [
        (*_empty_lists(num_texts, k_cols), torch.full((num_texts,), -torch.inf)) for _ in range(workers)
    ]

    def work(task: int, state: tuple[Tensor, Tensor, Tensor]) -> None:
        start, stop = row_blocks[task]
        col_val, col_idx, col_kth = state
        for low, high in col_blocks:
            scores = score_block(images[start:stop], texts[low:high])
            kernel(
                scores.data_ptr(), stop - start, high - low, scores.stride(0), start, low,
                row_val.data_ptr(), row_idx.data_ptr(), k_rows,
                col_val.data_ptr(), col_idx.data_ptr(), col_kth.data_ptr(), k_cols,
            )  # fmt: skip

    with one_intra_op_thread(workers > 1):
        run_tasks(range(len(row_blocks)), work, states)
    i2t = row_idx.long()
    t2i = _merge([s[0] for s in states], [s[1] for s in states], k_cols)
    if bool((i2t == _NO_INDEX).any()) or bool((t2i == _NO_INDEX).any()):
        return None  # a slot never filled (scores not finite): let the torch path decide
    return i2t, t2i


def both_directions(
    image_emb: Tensor,
    text_emb: Tensor,
    k_i2t: int,
    k_t2i: int,
    chunk_size: int | None = None,
    score_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """(i2t [N, k] caption rows, t2i [M, k] image rows), best first, ties by lower index.

    k is clipped to the gallery size. One kernel pass on the CPU in float32, else `torch_top_k`
    per direction.
    """
    images, texts = image_emb.to(score_dtype), text_emb.to(score_dtype)
    k_i2t, k_t2i = min(k_i2t, texts.shape[0]), min(k_t2i, images.shape[0])
    if images.device.type == "cpu" and score_dtype == torch.float32:
        found = kernel_top_k(images, texts, k_i2t, k_t2i, chunk_size)
        if found is not None:
            return found
    return torch_top_k(images, texts, k_i2t, chunk_size), torch_top_k(texts, images, k_t2i, chunk_size)
