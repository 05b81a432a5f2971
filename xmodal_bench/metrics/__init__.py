"""Retrieval metrics: exact chunked ranks on embeddings, the caption / COCO / person protocols,
and a torchmetrics collector that gathers evaluation embeddings under DDP.

Inputs are embeddings (callers L2-normalise); score = dot product, computed in float32 by
default. Ranks are 0-based and exact: ties are broken by gallery index, as a stable sort.
"""

from xmodal_bench.metrics.caption import (
    CAPTION_METRIC_NAMES,
    caption_metrics_from_ranks,
    caption_ranks,
    caption_retrieval,
)
from xmodal_bench.metrics.chunking import (
    DEFAULT_MEMORY_BUDGET,
    resolve_chunk_size,
    resolve_score_dtype,
    tile_shape,
)
from xmodal_bench.metrics.person import (
    PERSON_METRIC_NAMES,
    person_metrics_from_ranks,
    person_ranks,
    person_retrieval,
    positive_gallery_index,
)
from xmodal_bench.metrics.protocols import (
    Gallery,
    MetricInfo,
    Protocol,
    RankFn,
    Ranks,
    coco_1k,
    coco_5k,
    coco_retrieval,
    fold_bounds,
    get_protocol,
    list_protocols,
    register_protocol,
)
from xmodal_bench.metrics.ranks import positive_ranks, ranks_in_block, score_block

# The DDP collector needs torchmetrics (seconds to import, torchvision with it): loaded on first
# use, so `xmodal-bench score` and the functional metrics start without it.
_LAZY = {"EmbeddingCollector": "collector", "EmbeddingCountError": "collector"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CAPTION_METRIC_NAMES",
    "DEFAULT_MEMORY_BUDGET",
    "PERSON_METRIC_NAMES",
    "EmbeddingCollector",
    "EmbeddingCountError",
    "Gallery",
    "MetricInfo",
    "Protocol",
    "RankFn",
    "Ranks",
    "caption_metrics_from_ranks",
    "caption_ranks",
    "caption_retrieval",
    "coco_1k",
    "coco_5k",
    "coco_retrieval",
    "fold_bounds",
    "get_protocol",
    "list_protocols",
    "person_metrics_from_ranks",
    "person_ranks",
    "person_retrieval",
    "positive_gallery_index",
    "positive_ranks",
    "ranks_in_block",
    "register_protocol",
    "resolve_chunk_size",
    "resolve_score_dtype",
    "score_block",
    "tile_shape",
]
