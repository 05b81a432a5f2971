"""Search index building blocks: the config, the backend interface and the exact torch backend.

See `retrieval.index` (the factory every caller uses) for what the backends are; this module
holds what every backend shares, so `index_faiss` builds on it without importing the factory.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from xmodal_bench.atomic import atomic_write_text
from xmodal_bench.errors import UserError

BACKENDS = ("auto", "torch", "faiss-flat", "faiss-ivf", "faiss-hnsw")
DEVICES = ("auto", "cpu", "cuda")
INDEX_FORMAT = 1
META_FILE = "index.json"
_SCORE_BUDGET = 1 << 26  # torch backend: elements of one query x gallery score block (256 MB in float32)


@dataclass
class IndexConfig:
    """Backend and knobs of a search index (the `index:` section of a method config).

    Defaults of the approximate backends are chosen for recall@10 >= 0.95 on galleries of a few
    thousand to 100K items; raise `nprobe` / `ef_search` for more recall, lower them for speed.
    """

    backend: str = "auto"  # auto | torch | faiss-flat | faiss-ivf | faiss-hnsw
    device: str = "auto"  # auto (GPU when available) | cpu | cuda
    nlist: int = 0  # faiss-ivf: number of cells; 0 = 4 * sqrt(N), at most N / 39 (k-means needs data)
    nprobe: int = 32  # faiss-ivf: cells scanned per query
    hnsw_m: int = 32  # faiss-hnsw: graph links per node
    ef_construction: int = 200  # faiss-hnsw: candidate list size while building
    ef_search: int = 256  # faiss-hnsw: candidate list size while searching (raised to k when smaller)
    chunk_size: int = 4096  # torch: queries per matmul (fewer when the score block would pass 64M floats)


def check_index_config(config: IndexConfig | Any) -> None:
    """Refuse unknown backends and out-of-range knobs with one clear message."""
    if config.backend not in BACKENDS:
        raise UserError(f"unknown index backend {config.backend!r}; choose one of {', '.join(BACKENDS)}")
    if config.device not in DEVICES:
        raise UserError(f"index device {config.device!r}; choose one of {', '.join(DEVICES)}")
    for name, low in (("nlist", 0), ("nprobe", 1), ("hnsw_m", 2), ("ef_construction", 1)):
        if int(getattr(config, name)) < low:
            raise UserError(f"index.{name} must be >= {low}, got {getattr(config, name)}")
    for name in ("ef_search", "chunk_size"):
        if int(getattr(config, name)) < 1:
            raise UserError(f"index.{name} must be >= 1, got {getattr(config, name)}")


def as_index_config(config: IndexConfig | Any | None = None, **overrides: Any) -> IndexConfig:
    """An `IndexConfig` from a dataclass, an OmegaConf node or a dict, with keyword overrides."""
    if config is None:
        values: dict[str, Any] = {}
    elif isinstance(config, IndexConfig):
        values = asdict(config)
    else:
        values = {f.name: config[f.name] for f in fields(IndexConfig) if f.name in config}
    unknown = sorted(set(overrides) - {f.name for f in fields(IndexConfig)})
    if unknown:
        raise UserError(f"unknown index option(s): {', '.join(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    out = IndexConfig(**values)
    check_index_config(out)
    return out


# --------------------------------------------------------------------------------------------- helpers


def to_float_matrix(x: Tensor | np.ndarray | Sequence[Sequence[float]], what: str) -> Tensor:
    """A 2-D finite float32 tensor, L2-normalised row-wise (same device as a tensor input)."""
    tensor = x.detach() if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))
    if tensor.ndim != 2:
        raise UserError(f"{what} must be a 2-D [items, dim] array, got shape {tuple(tensor.shape)}")
    if tensor.shape[0] == 0 or tensor.shape[1] == 0:
        raise UserError(f"{what} is empty (shape {tuple(tensor.shape)})")
    if not tensor.is_floating_point():
        raise UserError(f"{what} must be floating point, got {tensor.dtype}")
    tensor = tensor.float()
    if not bool(torch.isfinite(tensor).all()):
        raise UserError(f"{what} contains NaN or infinite values")
    return F.normalize(tensor, dim=1)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def faiss_gpus() -> int:
    """GPUs faiss can use (0 for the CPU-only build or when faiss is missing)."""
    try:
        import faiss
    except ImportError:
        return 0
    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    return int(faiss.get_num_gpus())


def resolve_backend(backend: str, gallery_device: torch.device | None = None) -> str:
    """`auto` -> a concrete backend for a gallery held on `gallery_device`."""
    if backend != "auto":
        return backend
    if not faiss_available():
        return "torch"
    on_gpu = gallery_device is not None and gallery_device.type == "cuda"
    return "torch" if on_gpu and faiss_gpus() == 0 else "faiss-flat"


# --------------------------------------------------------------------------------------------- interface


class SearchIndex:
    """Base class of the backends: input checks, id bookkeeping, saving; subclasses do the search."""

    backend = "base"
    exact = True

    def __init__(self, config: IndexConfig | None = None) -> None:
        self.config = as_index_config(config)
        self.dim: int | None = None
        self.ntotal = 0
        self.ids: list[Any] = []

    # -- public API ----------------------------------------------------------------------------------

    def build(self, embeddings: Tensor | np.ndarray, ids: Sequence[Any] | None = None) -> SearchIndex:
        """Index `embeddings` [N, D] (normalised inside); `ids` (length N) label the rows. Returns self."""
        vectors = to_float_matrix(embeddings, "gallery embeddings")
        if ids is not None and len(ids) != vectors.shape[0]:
            raise UserError(f"got {len(ids)} ids for {vectors.shape[0]} gallery embeddings")
        self.dim, self.ntotal = int(vectors.shape[1]), int(vectors.shape[0])
        self.ids = list(range(self.ntotal)) if ids is None else [_plain_id(i) for i in ids]
        self._build(vectors)
        return self

    def search(self, queries: Tensor | np.ndarray, k: int) -> tuple[Tensor, Tensor]:
        """Top-k gallery rows of each query: (scores [Q, k] float32, rows [Q, k] int64), best first.

        Results come back on the queries' device (CPU for numpy queries); k is clamped to the
        gallery size.
        """
        if self.dim is None:
            raise UserError("the index is empty: build() it or load() a saved one before searching")
        if isinstance(k, bool) or int(k) != k or k < 1:
            raise UserError(f"k must be a positive integer, got {k!r}")
        q = to_float_matrix(queries, "queries")
        if q.shape[1] != self.dim:
            raise UserError(f"queries have dimension {q.shape[1]} but the index holds dimension {self.dim}")
        out_device = queries.device if isinstance(queries, Tensor) else torch.device("cpu")
        scores, rows = self._search(q, min(int(k), self.ntotal))
        return scores.to(out_device), rows.to(out_device)

    def lookup(self, rows: Tensor | Sequence[int]) -> list[Any]:
        """The ids of gallery rows (flat list, in the order given)."""
        flat = rows.flatten().tolist() if isinstance(rows, Tensor) else list(rows)
        return [self.ids[int(r)] for r in flat]

    def __len__(self) -> int:
        return self.ntotal

    def save(self, path: str | Path) -> Path:
        """Write the index to the folder `path` (`index.json` + the backend's data file)."""
        if self.dim is None:
            raise UserError("cannot save an empty index: build() it first")
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_data(folder)
        meta = {
            "format": INDEX_FORMAT,
            "backend": self.backend,
            "config": asdict(self.config),
            "dim": self.dim,
            "ntotal": self.ntotal,
            "ids": self.ids,
        }
        atomic_write_text(folder / META_FILE, json.dumps(meta) + "\n")  # last: marks the index complete
        return folder

    def describe(self) -> str:
        return f"{self.backend} index of {self.ntotal} x {self.dim}"

    # -- backend hooks -------------------------------------------------------------------------------

    def _build(self, vectors: Tensor) -> None:
        raise NotImplementedError

    def _search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _save_data(self, folder: Path) -> None:
        raise NotImplementedError

    def _load_data(self, folder: Path) -> None:
        raise NotImplementedError

    def stored_shape(self) -> tuple[int, int]:
        """(rows, dimension) of the vectors the backend holds (checked against the metadata on load)."""
        raise NotImplementedError


def _plain_id(value: Any) -> Any:
    """Ids are stored as JSON: numpy / torch scalars become Python numbers."""
    if isinstance(value, (np.generic, Tensor)):
        return value.item()
    return value


class TorchIndex(SearchIndex):
    """Exact search: chunked matmul + topk on the gallery's device."""

    backend = "torch"
    exact = True

    def __init__(self, config: IndexConfig | None = None) -> None:
        super().__init__(config)
        self.vectors: Tensor | None = None

    def _device(self, given: torch.device) -> torch.device:
        wanted = self.config.device
        if wanted == "cpu" or (wanted == "cuda" and not torch.cuda.is_available()):
            return torch.device("cpu")
        if wanted == "cuda":
            return torch.device("cuda")
        return given

    def _build(self, vectors: Tensor) -> None:
        self.vectors = vectors.contiguous().to(self._device(vectors.device))

    def _search(self, queries: Tensor, k: int) -> tuple[Tensor, Tensor]:
        assert self.vectors is not None
        queries = queries.to(self.vectors.device)
        scores, rows = [], []
        chunk = max(1, min(int(self.config.chunk_size), _SCORE_BUDGET // self.ntotal))
        for block in queries.split(chunk):
            top = (block @ self.vectors.T).topk(k, dim=1)
            scores.append(top.values)
            rows.append(top.indices)
        return torch.cat(scores), torch.cat(rows)

    def _save_data(self, folder: Path) -> None:
        assert self.vectors is not None
        np.save(folder / "vectors.npy", self.vectors.cpu().numpy())

    def stored_shape(self) -> tuple[int, int]:
        assert self.vectors is not None
        return int(self.vectors.shape[0]), int(self.vectors.shape[1])

    def _load_data(self, folder: Path) -> None:
        array = np.load(folder / "vectors.npy", allow_pickle=False)
        if array.ndim != 2 or array.dtype != np.float32:
            raise UserError(
                f"{folder}/vectors.npy: expected a float32 matrix, got {array.dtype} {array.shape}"
            )
        vectors = torch.from_numpy(array)
        on_gpu = self.config.device != "cpu" and torch.cuda.is_available()
        self.vectors = vectors.to("cuda" if on_gpu else "cpu")


def default_nlist(ntotal: int) -> int:
    """IVF cells for N items: 4 sqrt(N) (faiss' rule of thumb), at most N / 39 so k-means has data."""
    return max(1, min(int(4 * math.sqrt(ntotal)), ntotal // 39))
