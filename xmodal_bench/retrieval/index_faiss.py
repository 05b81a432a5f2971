"""faiss backends of the search index: flat (exact), IVF and HNSW (approximate), inner product.

Imported only when a faiss backend is asked for (`retrieval.index.index_class`), so the rest of
the package works without faiss. Every index is built for inner product on L2-normalised float32
vectors (`METRIC_INNER_PRODUCT`), so scores are cosines, comparable with the torch backend.

GPU: with the `faiss-gpu` build and at least one GPU visible to faiss, flat and IVF indexes are
moved to GPU 0 (`index_cpu_to_gpu`) before training / adding, unless `device=cpu`; they are
copied back to the CPU to be saved and moved again when loaded. faiss has no GPU HNSW: that
backend stays on the CPU. (The GPU path cannot run on a CPU-only machine; the CPU path is tested.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
import torch
from torch import Tensor

from xmodal_bench.retrieval.index_base import IndexConfig, SearchIndex, default_nlist, faiss_gpus

INDEX_FILE = "index.faiss"


def _numpy(x: Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)


class FaissIndex(SearchIndex):
    """Common part of the faiss backends: GPU placement, search, completion of short results, I/O."""

    def __init__(self, config: IndexConfig | None = None) -> None:
        super().__init__(config)
        self.index: Any = None
        self._gpu_resources: Any = None

    # -- placement -----------------------------------------------------------------------------------

    gpu_capable = True

    def on_gpu(self) -> bool:
        return self.gpu_capable and self.config.device != "cpu" and faiss_gpus() > 0

    def _to_device(self, index: Any) -> Any:
        if not self.on_gpu():
            return index
        if self._gpu_resources is None:
            self._gpu_resources = faiss.StandardGpuResources()
        return faiss.index_cpu_to_gpu(self._gpu_resources, 0, index)

    def _to_cpu(self, index: Any) -> Any:
        return faiss.index_gpu_to_cpu(index) if self.on_gpu() else index

    # -- backend hooks -------------------------------------------------------------------------------

    def _new_index(self, dim: int) -> Any:
        raise NotImplementedError

    def _build(self, vectors: Tensor) -> None:
        data = _numpy(vectors)
        index = self._to_device(self._new_index(data.shape[1]))
        if not index.is_trained:
            index.train(data)
        index.add(data)
        self.index = index
        self._apply_search_knobs(k=1)

    def _apply_search_knobs(self, k: int) -> None:
        """Set per-search parameters (nprobe, efSearch) from the config."""

    def _search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        self._apply_search_knobs(k)
        data = _numpy(queries)
        scores, rows = self.index.search(data, k)
        short = np.nonzero((rows < 0).any(axis=1))[0]
        if short.size:  # an approximate index found fewer than k items for these queries
            scores[short], rows[short] = self._exhaustive(data[short], k)
        return torch.from_numpy(scores), torch.from_numpy(rows.astype(np.int64))

    def _exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by brute force over the stored vectors (for the rare short results)."""
        vectors = self._to_cpu(self.index).reconstruct_n(0, self.ntotal)
        top = torch.from_numpy(queries @ vectors.T).topk(k, dim=1)
        return top.values.numpy(), top.indices.numpy()

    def _save_data(self, folder: Path) -> None:
        faiss.write_index(self._to_cpu(self.index), str(folder / INDEX_FILE))

    def _load_data(self, folder: Path) -> None:
        cpu_index = faiss.read_index(str(folder / INDEX_FILE))
        self._loaded(cpu_index)
        self.index = self._to_device(cpu_index)
        self._apply_search_knobs(k=1)

    def stored_shape(self) -> tuple[int, int]:
        return int(self.index.ntotal), int(self.index.d)

    def _loaded(self, cpu_index: Any) -> None:
        """Read what the backend needs from a freshly loaded CPU index."""


class FaissFlatIndex(FaissIndex):
    """Exact inner-product search (`IndexFlatIP`); the reference the approximate backends are tested against."""

    backend = "faiss-flat"
    exact = True

    def _new_index(self, dim: int) -> Any:
        return faiss.IndexFlatIP(dim)


class FaissIVFIndex(FaissIndex):
    """Inverted file (`IndexIVFFlat`): k-means cells, `nprobe` of `nlist` scanned per query."""

    backend = "faiss-ivf"
    exact = False

    def nlist(self) -> int:
        return int(self.config.nlist) or default_nlist(self.ntotal)

    def _new_index(self, dim: int) -> Any:
        nlist = min(self.nlist(), self.ntotal)  # k-means needs at least one point per cell
        self._nlist = nlist
        self._quantizer = faiss.IndexFlatIP(dim)  # kept referenced: the IVF index does not own it
        return faiss.IndexIVFFlat(self._quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)

    def stored_shape(self) -> tuple[int, int]:
        return int(self.index.ntotal), int(self.index.d)

    def _loaded(self, cpu_index: Any) -> None:
        self._nlist = int(cpu_index.nlist)

    def _apply_search_knobs(self, k: int) -> None:
        self.index.nprobe = min(int(self.config.nprobe), self._nlist)

    def _exhaustive(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # probing every cell is an exact search and needs no copy of the vectors
        self.index.nprobe = self._nlist
        try:
            return self.index.search(queries, k)
        finally:
            self._apply_search_knobs(k)

    def describe(self) -> str:
        return f"{super().describe()} (nlist={self._nlist}, nprobe={min(self.config.nprobe, self._nlist)})"


class FaissHNSWIndex(FaissIndex):
    """HNSW graph (`IndexHNSWFlat`); CPU only (faiss has no GPU HNSW)."""

    backend = "faiss-hnsw"
    exact = False
    gpu_capable = False

    def _new_index(self, dim: int) -> Any:
        index = faiss.IndexHNSWFlat(dim, int(self.config.hnsw_m), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(self.config.ef_construction)
        return index

    def _apply_search_knobs(self, k: int) -> None:
        self.index.hnsw.efSearch = max(int(self.config.ef_search), k)

    def describe(self) -> str:
        return f"{super().describe()} (M={self.config.hnsw_m}, efSearch={self.config.ef_search})"


FAISS_BACKENDS: dict[str, type[FaissIndex]] = {
    "faiss-flat": FaissFlatIndex,
    "faiss-ivf": FaissIVFIndex,
    "faiss-hnsw": FaissHNSWIndex,
}

__all__ = ["FAISS_BACKENDS", "FaissFlatIndex", "FaissHNSWIndex", "FaissIVFIndex", "FaissIndex"]
