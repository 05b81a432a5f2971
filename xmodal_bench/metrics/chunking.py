"""How many queries to score at once: memory is O(chunk x gallery), never the full score matrix."""

from __future__ import annotations

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
