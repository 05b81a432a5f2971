"""The two-stage engine against a brute-force reference: full global matrix, full fine matrix,
the fused score restricted to each query's shortlist, stable sorts everywhere."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from xmodal_bench.errors import UserError
from xmodal_bench.metrics import (
    caption_metrics_from_ranks,
    caption_retrieval,
    coco_retrieval,
    fold_bounds,
    person_retrieval,
)
from xmodal_bench.retrieval.evaluation import (
    EvalInputs,
    evaluate_modes,
    exhaustive_mode,
    fused_mode,
    global_mode,
)
from xmodal_bench.retrieval.token_scores import token_score_matrix
from xmodal_bench.retrieval.two_stage import (
    CosineIndex,
    exhaustive_ranks,
    exhaustive_search,
    stable_top_k,
    token_fine_scorer,
    two_stage_ranks,
    two_stage_search,
)


def _stable_desc(values: torch.Tensor) -> torch.Tensor:
    return torch.sort(values, descending=True, stable=True).indices


def _brute_order(glob: torch.Tensor, fine: torch.Tensor, shortlist: torch.Tensor, lam: float) -> torch.Tensor:
    """Final order of one query: the shortlist by fused score (ties: index), then the rest by global."""
    listed = torch.sort(shortlist).values
    reranked = listed[_stable_desc(glob[listed] + lam * fine[listed])]
    rest = [int(g) for g in _stable_desc(glob) if int(g) not in set(listed.tolist())]
    return torch.cat([reranked, torch.tensor(rest, dtype=torch.long)])


def _brute_ranks(glob, fine, positives, k, lam, shortlists=None):
    out = torch.full(positives.shape, -1, dtype=torch.long)
    for q in range(glob.shape[0]):
        shortlist = _stable_desc(glob[q])[:k] if shortlists is None else shortlists[q]
        order = _brute_order(glob[q], fine[q], shortlist, lam).tolist()
        for slot, p in enumerate(positives[q].tolist()):
            if p >= 0:
                out[q, slot] = order.index(p)
    return out


def _lookup(matrix: torch.Tensor):
    """A fine scorer that reads a precomputed [Q, G] matrix (exact values, no rounding)."""
    return lambda rows, candidates: matrix[rows] if candidates is None else matrix[rows[:, None], candidates]


def _integer_problem(seed: int, queries: int = 9, gallery: int = 13, slots: int = 3):
    """Small integer embeddings and fine scores: dot products are exact and full of ties."""
    g = torch.Generator().manual_seed(seed)
    query_emb = torch.randint(-1, 2, (queries, 4), generator=g).float()
    gallery_emb = torch.randint(-1, 2, (gallery, 4), generator=g).float()
    fine = torch.randint(-2, 3, (queries, gallery), generator=g).float()
    positives = torch.stack([torch.randperm(gallery, generator=g)[:slots] for _ in range(queries)])
    positives[::3, -1] = -1  # padding
    return query_emb, gallery_emb, fine, positives


@pytest.mark.parametrize("k", [1, 2, 5, 13, 40])
@pytest.mark.parametrize("seed", [0, 1])
def test_fused_ranks_equal_brute_force_for_any_k(k: int, seed: int) -> None:
    query_emb, gallery_emb, fine, positives = _integer_problem(seed)
    glob = query_emb @ gallery_emb.T
    expected = _brute_ranks(glob, fine, positives, min(k, 13), lam=0.5)
    got = two_stage_ranks(query_emb, gallery_emb, positives, _lookup(fine), k, lam=0.5, chunk_size=4)
    assert torch.equal(got, expected)
    if k < 5:  # some positive was left outside the shortlist: it keeps its global rank (>= K)
        outside = expected >= k
        assert outside.any()
        global_rank = _brute_ranks(glob, torch.zeros_like(fine), positives, 13, lam=0.0)
        assert torch.equal(got[outside], global_rank[outside])


def test_ranks_with_an_approximate_index_follow_the_same_order() -> None:
    query_emb, gallery_emb, fine, positives = _integer_problem(3)
    glob = query_emb @ gallery_emb.T
    g = torch.Generator().manual_seed(7)
    shortlists = torch.stack([torch.randperm(13, generator=g)[:4] for _ in range(9)])
    shortlists[0, -1] = -1  # an index that found fewer than k

    class Arbitrary:
        def search(self, queries, k):
            rows = shortlists[: queries.shape[0]] if queries.shape[0] == 9 else None
            assert rows is not None
            return glob.gather(1, rows.clamp(min=0)), rows

    expected = _brute_ranks(glob, fine, positives, 4, 1.0, [s[s >= 0] for s in shortlists])
    got = two_stage_ranks(query_emb, gallery_emb, positives, _lookup(fine), 4, lam=1.0, index=Arbitrary())
    assert torch.equal(got, expected)


def test_search_returns_the_head_of_the_brute_force_order() -> None:
    query_emb, gallery_emb, fine, _ = _integer_problem(4)
    glob = query_emb @ gallery_emb.T
    rows = torch.arange(9)
    _, found = two_stage_search(
        query_emb, rows, CosineIndex(gallery_emb, chunk=4), _lookup(fine), 6, 2.0, top=4
    )
    for q in range(9):
        assert (
            found[q].tolist() == _brute_order(glob[q], fine[q], _stable_desc(glob[q])[:6], 2.0)[:4].tolist()
        )
    _, found = exhaustive_search(rows, _lookup(fine), 5, chunk=4)
    assert torch.equal(found, torch.stack([_stable_desc(fine[q])[:5] for q in range(9)]))
    expected = torch.stack([torch.argsort(_stable_desc(fine[q]))[[0, 5]] for q in range(9)])
    assert torch.equal(exhaustive_ranks(torch.tensor([[0, 5]] * 9), _lookup(fine), chunk_size=4), expected)


def test_stable_top_k_breaks_ties_by_index() -> None:
    scores = torch.tensor([[1.0, 3.0, 3.0, 2.0, 3.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    values, indices = stable_top_k(scores, 2)
    assert indices.tolist() == [[1, 2], [0, 1]] and values.tolist() == [[3.0, 3.0], [0.0, 0.0]]
    assert stable_top_k(scores, 9)[1].tolist() == [[1, 2, 4, 3, 0], [0, 1, 2, 3, 4]]


def test_impossible_k_is_a_user_error() -> None:
    query_emb, gallery_emb, fine, positives = _integer_problem(0)
    with pytest.raises(UserError, match="positive integer"):
        two_stage_ranks(query_emb, gallery_emb, positives, _lookup(fine), 0)
    with pytest.raises(UserError, match="k_i2t"):
        fused_mode(lambda inputs, direction: None, k_t2i=5, k_i2t=0)


def test_token_fine_scorer_matches_the_token_score_matrix() -> None:
    torch.manual_seed(0)
    words = F.normalize(torch.randn(6, 7, 4), dim=-1)
    mask = (torch.arange(7)[None, :] < torch.tensor([2, 5, 3, 1, 4, 5])[:, None]).to(torch.uint8)
    regions = F.normalize(torch.randn(4, 3, 4), dim=-1)
    full = token_score_matrix(words, mask.bool(), regions)  # [texts, images]
    t2i, i2t = (token_fine_scorer(words, mask, regions, d) for d in ("t2i", "i2t"))
    candidates = torch.tensor([[3, 0], [1, 1], [2, 3]])
    rows = torch.tensor([5, 0, 2])
    assert torch.allclose(t2i(rows, candidates), full[rows[:, None], candidates], atol=1e-6)
    assert torch.allclose(t2i(rows, None), full[rows], atol=1e-6)
    assert torch.allclose(
        i2t(torch.tensor([1, 3, 0]), candidates), full.T[[[1], [3], [0]], candidates], atol=1e-6
    )
    assert torch.allclose(i2t(torch.tensor([2, 1]), None), full.T[[2, 1]], atol=1e-6)


# ---------------------------------------------------------------------------- protocols


def _features(seed: int, images: int = 20, per_image: int = 3, person: bool = False):
    g = torch.Generator().manual_seed(seed)
    image_emb = F.normalize(torch.randn(images, 8, generator=g), dim=-1)
    owner = torch.arange(images).repeat_interleave(per_image)
    text_emb = F.normalize(image_emb[owner] + 0.9 * torch.randn(len(owner), 8, generator=g), dim=-1)
    pids = torch.arange(images) // 2 if person else torch.arange(images)
    fine = torch.randn(len(owner), images, generator=g)  # [texts, images]
    image_feats = {"global": image_emb, "pid": pids}
    text_feats = {"global": text_emb, "pid": pids[owner], "image_index": owner}
    return image_feats, text_feats, fine


def _fine_for(fine: torch.Tensor):
    def fine_for(inputs, direction):
        return _lookup(fine if direction == "t2i" else fine.T)

    return fine_for


@pytest.mark.parametrize("protocol", ["caption", "coco", "person"])
def test_no_fine_weight_gives_the_global_metrics(protocol: str) -> None:
    images, texts, fine = _features(1, person=protocol == "person")
    inputs = EvalInputs(images, texts, protocol)
    fused = fused_mode(_fine_for(fine), k_t2i=3, k_i2t=4, lam=0.0).metrics(None, inputs)
    assert fused == pytest.approx(global_mode().metrics(None, inputs))
    as_fine = _fine_for(texts["global"] @ images["global"].T)
    assert exhaustive_mode(as_fine).metrics(None, inputs) == pytest.approx(
        global_mode().metrics(None, inputs)
    )
    reference = {
        "caption": lambda: caption_retrieval(images["global"], texts["global"], texts["image_index"]),
        "coco": lambda: coco_retrieval(images["global"], texts["global"], texts["image_index"]),
        "person": lambda: person_retrieval(texts["global"], images["global"], texts["pid"], images["pid"]),
    }[protocol]()
    assert fused == pytest.approx(reference)


def _brute_caption(glob_ti, fine_ti, owner, k_t2i, k_i2t, lam):
    """Caption metrics of the fused mode from full [texts, images] matrices."""
    t2i = _brute_ranks(glob_ti, fine_ti, owner[:, None], min(k_t2i, glob_ti.shape[1]), lam)[:, 0]
    i2t = []
    for i in range(glob_ti.shape[1]):
        own = torch.nonzero(owner == i).squeeze(1)
        ranks = _brute_ranks(
            glob_ti.T[i : i + 1], fine_ti.T[i : i + 1], own[None], min(k_i2t, len(owner)), lam
        )
        i2t.append(int(ranks.min()))
    return caption_metrics_from_ranks(torch.tensor(i2t), t2i)


@pytest.mark.parametrize("protocol", ["caption", "coco"])
def test_fused_mode_metrics_equal_brute_force(protocol: str) -> None:
    images, texts, fine = _features(2)
    inputs = EvalInputs(images, texts, protocol, chunk_size=7)
    got = fused_mode(_fine_for(fine), k_t2i=3, k_i2t=5, lam=0.7).metrics(None, inputs)
    owner = texts["image_index"]
    glob = texts["global"] @ images["global"].T
    expected = _brute_caption(glob, fine, owner, 3, 5, 0.7)
    if protocol == "coco":
        folds = []
        for start, stop in fold_bounds(20):
            keep = torch.nonzero((owner >= start) & (owner < stop)).squeeze(1)
            folds.append(
                _brute_caption(
                    glob[keep][:, start:stop], fine[keep][:, start:stop], owner[keep] - start, 3, 5, 0.7
                )
            )
        expected = {f"5k/{k}": v for k, v in expected.items()} | {
            f"1k/{k}": sum(f[k] for f in folds) / len(folds) for k in folds[0]
        }
    assert got == pytest.approx(expected)


def test_modes_report_latency_and_the_local_mode_is_skipped_on_large_galleries() -> None:
    images, texts, fine = _features(3)
    inputs = EvalInputs(images, texts, "caption")
    modes = [
        fused_mode(_fine_for(fine), k_t2i=4, k_i2t=4),
        global_mode(),
        exhaustive_mode(_fine_for(fine), max_gallery=59),
    ]
    report = evaluate_modes(None, inputs, modes, latency_queries=10, top_k=3)
    assert list(report["modes"]) == ["fused", "global"] and "local" in report["skipped"]
    assert set(report["modes"]["fused"]["latency_ms"]) == {"t2i_ms", "i2t_ms"}
    modes[2] = exhaustive_mode(_fine_for(fine), max_gallery=60)
    assert list(evaluate_modes(None, inputs, modes, with_latency=False)["modes"]) == [
        "fused",
        "global",
        "local",
    ]
