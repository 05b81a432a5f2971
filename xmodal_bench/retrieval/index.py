"""Search index: top-k inner-product search over an embedding gallery, exact or approximate.

One interface, several backends, so that a method's retrieval embeddings can be deployed the way
a user would (ALADIN's matching head is meant to be served from a kNN index):

    index = create_index(IndexConfig(backend="faiss-hnsw")).build(embeddings, ids)
    scores, rows = index.search(queries, k=10)      # [Q, k] each, best first
    index.save("my_index"); index = load_index("my_index")

- `torch`: exact; chunked matmul + topk on the gallery's device (CPU or GPU).
- `faiss-flat`: exact; `IndexFlatIP`.
- `faiss-ivf`: approximate; inverted lists (`nlist` k-means cells, `nprobe` of them scanned per query).
- `faiss-hnsw`: approximate; HNSW graph (`hnsw_m` links per node, `ef_construction`, `ef_search`).
- `auto`: `faiss-flat`, unless the gallery is on a GPU that faiss cannot use (then `torch`, which
  keeps the search on the GPU) or faiss is not installed.

faiss backends run on the GPU when faiss sees one (the `faiss-gpu` build, extra `gpu`) and
`device` allows it; HNSW has no faiss GPU implementation and always runs on the CPU.

Conventions: embeddings and queries are L2-normalised inside (inner product = cosine) and kept
as float32. `search` returns the gallery *rows* (0..N-1, in build order) so they can index other
per-item tensors; `ids` (any JSON-serialisable labels given at build time, default the rows) map
rows to user ids with `lookup`. `k` larger than the gallery is clamped to the gallery size. An
approximate backend never returns fewer than k results: queries for which it finds fewer (IVF
probing nearly empty cells) are answered by an exhaustive pass. User mistakes (k < 1, dimension
mismatch, empty gallery, unknown backend, bad knobs) raise `UserError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xmodal_bench.errors import UserError
from xmodal_bench.retrieval.index_base import (
    BACKENDS,
    INDEX_FORMAT,
    META_FILE,
    IndexConfig,
    SearchIndex,
    TorchIndex,
    as_index_config,
    check_index_config,
    default_nlist,
    faiss_available,
    faiss_gpus,
    resolve_backend,
)

# --------------------------------------------------------------------------------------------- factory


def index_class(backend: str) -> type[SearchIndex]:
    if backend == "torch":
        return TorchIndex
    if backend in ("faiss-flat", "faiss-ivf", "faiss-hnsw"):
        if not faiss_available():
            raise UserError(
                f"index backend {backend!r} needs faiss: pip install faiss-cpu (or faiss-gpu-cu12), "
                "or use backend=torch"
            )
        from xmodal_bench.retrieval.index_faiss import FAISS_BACKENDS

        return FAISS_BACKENDS[backend]
    raise UserError(f"unknown index backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def create_index(
    config: IndexConfig | Any | None = None, gallery_device: torch.device | None = None, **overrides: Any
) -> SearchIndex:
    """An empty index of the configured backend (`auto` resolved for a gallery on `gallery_device`)."""
    cfg = as_index_config(config, **overrides)
    cfg.backend = resolve_backend(cfg.backend, gallery_device)
    return index_class(cfg.backend)(cfg)


def build_index(
    embeddings: Tensor | np.ndarray,
    ids: Sequence[Any] | None = None,
    config: IndexConfig | Any | None = None,
    **overrides: Any,
) -> SearchIndex:
    """`create_index(...).build(embeddings, ids)` in one call."""
    device = embeddings.device if isinstance(embeddings, Tensor) else None
    return create_index(config, gallery_device=device, **overrides).build(embeddings, ids)


def load_index(path: str | Path, **overrides: Any) -> SearchIndex:
    """Load an index written by `SearchIndex.save`; `overrides` change search knobs (e.g. nprobe).

    What is read is checked: `index.json`'s fields, and the data file's rows and dimension against
    it; anything damaged or mismatched is one UserError naming the folder.
    """
    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise UserError(f"no search index at {folder} (missing {META_FILE}); build one first")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{meta_path} is not valid JSON ({exc}); rebuild the index") from None
    if not isinstance(meta, dict) or meta.get("format") != INDEX_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{meta_path}: index format {found!r}, expected {INDEX_FORMAT}; rebuild it")
    try:
        dim, ntotal, ids = int(meta["dim"]), int(meta["ntotal"]), list(meta["ids"])
        config = as_index_config({**meta["config"], "backend": meta["backend"]}, **overrides)
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{meta_path}: malformed ({type(exc).__name__}: {exc}); rebuild the index") from None
    if dim < 1 or ntotal < 1 or len(ids) != ntotal:
        raise UserError(
            f"{meta_path}: {ntotal} rows of dimension {dim} with {len(ids)} ids; rebuild the index"
        )
    index = index_class(meta["backend"])(config)
    index.dim, index.ntotal, index.ids = dim, ntotal, ids
    try:
        index._load_data(folder)
    except UserError:
        raise
    except Exception as exc:  # a truncated or foreign data file (numpy, faiss)
        reason = " ".join(str(exc).split())[:200]
        raise UserError(
            f"{folder}: damaged index data ({type(exc).__name__}: {reason}); rebuild it"
        ) from None
    stored = index.stored_shape()
    if stored != (ntotal, dim):
        raise UserError(
            f"{folder}: the data file holds {stored[0]} x {stored[1]} vectors but {META_FILE} says "
            f"{ntotal} x {dim}; rebuild the index"
        )
    return index


__all__ = [
    "BACKENDS",
    "IndexConfig",
    "SearchIndex",
    "TorchIndex",
    "as_index_config",
    "build_index",
    "check_index_config",
    "create_index",
    "default_nlist",
    "faiss_available",
    "faiss_gpus",
    "index_class",
    "load_index",
    "resolve_backend",
]
