"""How many queries to score at once: memory is O(chunk x gallery), never the full score matrix."""

from __future__ import annotations

import math
import os

import torch

from xmodal_bench.errors import UserError

#: Bytes of temporaries one chunk may use when `chunk_size=None`.
DEFAULT_MEMORY_BUDGET = 256 * 2**20


def resolve_chunk_size(
    chunk_size: int | None, num_queries: int, bytes_per_query: int, budget: int = DEFAULT_MEMORY_BUDGET
) -> int:
    """The chunk size to use: `chunk_size` as given, or (None) as many queries as fit in `budget`.

    `bytes_per_query` is what one query row costs in temporaries (score row, comparison masks).
    The result is clamped to [1, num_queries].
    """
    if chunk_size is None:
        chunk_size = budget // max(1, bytes_per_query)
    elif isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise UserError(f"chunk size must be a positive integer, got {chunk_size!r}")
    return max(1, min(int(chunk_size), max(1, num_queries)))


#: Score-tile elements on CPU: a tile and its comparison masks stay in a core's L2 cache, where
#: the counting passes run several times faster than from main memory. Measured in benchmarks/perf.
CPU_TILE_ELEMENTS = 2**18
#: Score-tile elements on CPU when the fused count kernel (`metrics.fused`) counts the tiles: it
#: reads a tile once, so larger tiles (4 MiB), where the matmul runs faster, cost it nothing.
FUSED_CPU_TILE_ELEMENTS = 2**20
#: Upper bound for accelerators, whose kernels want large tiles (fp32: 1 GiB of scores).
MAX_TILE_ELEMENTS = 2**28
#: Bytes per tile element while a tile is alive: the scores plus two boolean masks, with slack.
_BYTES_PER_ELEMENT_OVERHEAD = 4


def available_memory(device: torch.device) -> int:
    """Bytes free for temporaries on `device` now (CUDA: the allocator's free memory; else host RAM)."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # not POSIX: assume a modest machine
        return 4 * 2**30


def tile_shape(
    chunk_size: int | None,
    num_rows: int,
    num_cols: int,
    device: torch.device,
    score_bytes: int = 4,
    cpu_elements: int | None = None,
) -> tuple[int, int]:
    """(rows, columns) of one score tile for a `num_rows` x `num_cols` score matrix.

    The tile's size comes from the device: cache-sized on CPU (`CPU_TILE_ELEMENTS`), a quarter of
    the free memory on an accelerator (capped at `MAX_TILE_ELEMENTS`; `cpu_elements` replaces the
    CPU size), and never more than an
    eighth of what is free. `chunk_size` fixes the rows (as given, clamped to [1, num_rows]);
    otherwise the tile is shaped like the matrix, so that a chunk of rows and the columns it owns
    (the caption protocol's diagonal block) are about one tile.
    """
    free = available_memory(device)
    per_element = score_bytes + _BYTES_PER_ELEMENT_OVERHEAD
    if device.type == "cpu":
        elements = min(cpu_elements or CPU_TILE_ELEMENTS, free // 8 // per_element)
    else:
        elements = min(MAX_TILE_ELEMENTS, free // 4 // per_element)
    elements = max(1, int(elements))
    if chunk_size is None:
        rows = math.isqrt(max(1, elements * max(1, num_rows) // max(1, num_cols)))
    else:
        rows = resolve_chunk_size(chunk_size, num_rows, 1)
    rows = max(1, min(rows, max(1, num_rows)))
    return rows, max(1, elements // rows)


def resolve_score_dtype(score_dtype: torch.dtype | str, device: torch.device) -> torch.dtype:
    """`"auto"`: bf16 on a CUDA device that supports it, else fp16 on CUDA, fp32 elsewhere.

    Half-precision matmuls are several times faster on GPUs' tensor cores; on CPU they are slower
    than fp32 and would round scores together, so CPU keeps fp32. Ranks stay exact with respect
    to the scores computed in that dtype (more ties are broken by index in half precision).
    """
    if isinstance(score_dtype, torch.dtype):
        return score_dtype
    if score_dtype != "auto":
        raise UserError(f"score_dtype must be a torch dtype or 'auto', got {score_dtype!r}")
    if device.type != "cuda":
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
