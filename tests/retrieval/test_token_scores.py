"""The max-over-regions, mean-over-words score against an explicit loop."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmodal_bench.retrieval.token_scores import token_score_matrix, token_score_pairs


def _naive(words: torch.Tensor, mask: torch.Tensor, regions: torch.Tensor) -> float:
    kept = [max(float(w @ r) for r in regions) for w, m in zip(words, mask, strict=True) if m]
    return sum(kept) / len(kept)


def test_matrix_and_pairs_match_the_definition() -> None:
    torch.manual_seed(0)
    texts = F.normalize(torch.randn(5, 7, 4), dim=-1)
    mask = torch.arange(7)[None, :] < torch.tensor([1, 3, 7, 2, 5])[:, None]
    images = F.normalize(torch.randn(3, 6, 4), dim=-1)
    expected = torch.tensor([[_naive(texts[t], mask[t], images[i]) for i in range(3)] for t in range(5)])
    matrix = token_score_matrix(texts, mask, images, chunk=2)
    assert torch.allclose(matrix, expected, atol=1e-6)
    t, i = torch.tensor([0, 4, 2]), torch.tensor([2, 0, 1])
    assert torch.allclose(token_score_pairs(texts[t], mask[t], images[i]), expected[t, i], atol=1e-6)


def test_padding_words_do_not_count() -> None:
    words = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    image = torch.tensor([[[1.0, 0.0]]])
    assert token_score_matrix(words, torch.tensor([[True, False]]), image).item() == 1.0
    assert token_score_matrix(words, torch.tensor([[True, True]]), image).item() == 0.5
