"""Inference modes served by a search index (`retrieval.index`): kNN over global embeddings.

`index_mode(config)` ranks the gallery with the configured index, the way a deployed model
answers queries:
- latency: the index is built once per gallery (outside the timed part, like loading it in a
  server would be) and the timed search asks it for the top-k of each query;
- metrics: with an exact backend (`torch`, `faiss-flat`) the ranking *is* the cosine ranking, so
  the metrics package computes them directly (exact ranks, all depths). With an approximate
  backend (IVF, HNSW) the index returns the first `depth` items of each query; a positive it
  misses ranks after them, in exact cosine order (the two-stage engine's rank rule with the
  index as stage 1 and no re-scoring), so the recalls show what the approximation costs.

`index_factory(config)` gives the `gallery -> Searcher` function the two-stage engine
(`retrieval.evaluation.fused_mode`) takes for its stage 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.metrics import Ranks, get_protocol
from xmodal_bench.retrieval.evaluation import EvalInputs, InferenceMode, embedding_ranks
from xmodal_bench.retrieval.index import (
    IndexConfig,
    SearchIndex,
    as_index_config,
    build_index,
    index_class,
    resolve_backend,
)
from xmodal_bench.retrieval.two_stage import check_k, two_stage_ranks


def index_factory(config: IndexConfig | Any | None = None) -> Callable[[Tensor], SearchIndex]:
    """`gallery [G, D] -> built index`: stage 1 of the two-stage engine served by a search index."""
    cfg = as_index_config(config)
    return lambda gallery: build_index(gallery, config=cfg)


def _no_rescoring(rows: Tensor, candidates: Tensor | None) -> Tensor:
    assert candidates is not None
    return torch.zeros(candidates.shape, device=candidates.device)


def index_mode(config: IndexConfig | Any | None = None, name: str = "knn", depth: int = 100) -> InferenceMode:
    """Rank by cosine of the global embeddings through a search index (see the module doc).

    `depth`: results asked from an approximate index per query for the metrics (exact backends
    rank the whole gallery).
    """
    check_k(depth, "depth")
    cfg = as_index_config(config)
    build = index_factory(cfg)
    cache: dict[str, tuple[Tensor, SearchIndex]] = {}  # per direction: (gallery, its index)

    def built(gallery: Tensor, direction: str) -> SearchIndex:
        entry = cache.get(direction)
        if entry is None or entry[0] is not gallery:  # the gallery is kept referenced: ids stay unique
            entry = (gallery, build(gallery))
            cache[direction] = entry
        return entry[1]

    def ranks(method: Any, inputs: EvalInputs) -> Ranks:
        images, texts = inputs.images, inputs.texts
        backend = resolve_backend(cfg.backend, images["global"].device)
        if index_class(backend).exact:
            return embedding_ranks(inputs)

        def rank(direction: str, query_rows: Tensor, gallery_rows: Tensor, positives: Tensor) -> Tensor:
            query, gallery = (texts, images) if direction == "t2i" else (images, texts)
            gallery_emb = gallery["global"][gallery_rows]
            return two_stage_ranks(
                query["global"][query_rows],
                gallery_emb,
                positives,
                _no_rescoring,
                depth,
                lam=0.0,
                index=build(gallery_emb),
                chunk_size=inputs.chunk_size,
            )

        return get_protocol(inputs.protocol).ranks_from(inputs.gallery(with_embeddings=False), rank)

    def search(method: Any, inputs: EvalInputs, direction: str, rows: Tensor, k: int) -> Tensor:
        query, gallery = (
            (inputs.texts, inputs.images) if direction == "t2i" else (inputs.images, inputs.texts)
        )
        return built(gallery["global"], direction).search(query["global"][rows], k)[1]

    return InferenceMode(name, ranks, search)


__all__ = ["index_factory", "index_mode"]
