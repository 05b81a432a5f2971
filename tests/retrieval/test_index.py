"""Search index backends against brute force: exact backends bit for bit, approximate ones by recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from xmodal_bench.errors import UserError
from xmodal_bench.retrieval.index import (
    IndexConfig,
    build_index,
    create_index,
    default_nlist,
    load_index,
    resolve_backend,
)

EXACT = ("torch", "faiss-flat")
APPROXIMATE = ("faiss-ivf", "faiss-hnsw")


def _clustered(n: int, dim: int = 32, clusters: int = 50, seed: int = 0) -> torch.Tensor:
    """Random embeddings with the cluster structure real ones have (a Gaussian mixture)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(clusters, dim, generator=g)
    return centres[torch.randint(0, clusters, (n,), generator=g)] + 0.5 * torch.randn(n, dim, generator=g)


@pytest.fixture(scope="module")
def data() -> dict[str, torch.Tensor]:
    gallery, queries = _clustered(2000), _clustered(200, seed=1)
    scores = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    top = scores.topk(10, dim=1)
    return {"gallery": gallery, "queries": queries, "scores": top.values, "rows": top.indices}


@pytest.mark.parametrize("backend", EXACT)
def test_exact_backends_return_the_brute_force_top_k(backend: str, data: dict) -> None:
    index = build_index(data["gallery"], backend=backend)
    assert index.exact and len(index) == 2000 and index.dim == 32
    scores, rows = index.search(data["queries"], 10)
    assert rows.dtype == torch.int64 and scores.dtype == torch.float32 and rows.shape == (200, 10)
    assert torch.equal(rows, data["rows"])
    assert torch.allclose(scores, data["scores"], atol=1e-5)


@pytest.mark.parametrize("backend", APPROXIMATE)
def test_approximate_backends_reach_recall_at_10_with_default_knobs(backend: str, data: dict) -> None:
    index = build_index(data["gallery"], backend=backend)
    assert not index.exact
    scores, rows = index.search(data["queries"], 10)
    found = [len(set(r.tolist()) & set(e.tolist())) / 10 for r, e in zip(rows, data["rows"], strict=True)]
    assert np.mean(found) >= 0.95, (backend, np.mean(found))
    assert bool((scores[:, :-1] >= scores[:, 1:] - 1e-6).all())  # best first
    assert bool((rows >= 0).all())


def test_ivf_with_nearly_empty_probes_still_returns_k_results() -> None:
    gallery = _clustered(400, clusters=8)
    index = build_index(gallery, backend="faiss-ivf", nlist=10, nprobe=1)
    _, rows = index.search(_clustered(50, clusters=8, seed=3), 200)  # more than one cell holds
    assert rows.shape == (50, 200) and bool((rows >= 0).all())
    assert all(len(set(r.tolist())) == 200 for r in rows)


def test_inputs_are_normalised_and_k_is_clamped() -> None:
    gallery = torch.tensor([[1.0, 0.0], [0.0, 3.0], [2.0, 2.0]])
    for backend in EXACT + APPROXIMATE:
        scores, rows = build_index(gallery, backend=backend).search(torch.tensor([[0.0, 5.0]]), 10)
        assert rows.tolist() == [[1, 2, 0]], backend
        assert torch.allclose(scores, torch.tensor([[1.0, 2**-0.5, 0.0]]), atol=1e-5), backend


@pytest.mark.parametrize("backend", EXACT + APPROXIMATE)
def test_save_load_round_trip_with_ids(backend: str, data: dict, tmp_path) -> None:
    ids = [f"img-{i}" for i in range(300)]
    index = build_index(data["gallery"][:300].numpy(), ids=ids, backend=backend)
    before = index.search(data["queries"][:20], 5)
    loaded = load_index(index.save(tmp_path / backend))
    after = loaded.search(data["queries"][:20], 5)
    assert loaded.backend == backend and loaded.ids == ids
    assert torch.equal(before[1], after[1]) and torch.allclose(before[0], after[0])
    assert loaded.lookup(after[1][0, :2]) == [ids[int(r)] for r in after[1][0, :2]]


def test_auto_backend_and_nlist_rule() -> None:
    assert resolve_backend("auto", torch.device("cpu")) == "faiss-flat"
    assert create_index(IndexConfig()).backend == "faiss-flat"
    assert default_nlist(100_000) == 1264 and default_nlist(2000) == 51 and default_nlist(10) == 1


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda: build_index(torch.randn(5, 4), backend="annoy"), "unknown index backend"),
        (lambda: build_index(torch.empty(0, 4)), "empty"),
        (lambda: build_index(torch.randn(5, 4), ids=[1, 2]), "2 ids for 5"),
        (lambda: build_index(torch.randn(5, 4)).search(torch.randn(2, 3), 1), "dimension 3"),
        (lambda: build_index(torch.randn(5, 4)).search(torch.randn(2, 4), 0), "positive integer"),
        (lambda: build_index(torch.randn(5, 4), backend="faiss-ivf", nprobe=0), "nprobe"),
        (lambda: create_index().search(torch.randn(2, 4), 1), "build"),
        (lambda: build_index(torch.full((3, 4), float("nan"))), "NaN"),
        (lambda: load_index("/nonexistent/index"), "no search index"),
    ],
)
def test_user_errors(action, message: str) -> None:
    with pytest.raises(UserError, match=message):
        action()
