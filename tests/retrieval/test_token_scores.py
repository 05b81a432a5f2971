"""The max-over-regions, mean-over-words score against an explicit loop; the cheap hinge matrix against the dense one."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from xmodal_bench.losses import hardest_negative_triplet, match_mask
from xmodal_bench.retrieval.token_scores import hinge_token_scores, token_score_matrix, token_score_pairs


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


def test_hinge_scores_give_the_full_matrix_values_loss_and_gradients() -> None:
    torch.manual_seed(0)
    words = torch.nn.functional.normalize(torch.randn(6, 5, 4), dim=-1).requires_grad_()
    regions = torch.nn.functional.normalize(torch.randn(6, 3, 4), dim=-1).requires_grad_()
    mask = torch.arange(5)[None, :] < torch.tensor([5, 2, 3, 4, 1, 5])[:, None]
    positives = match_mask(torch.tensor([0, 1, 0, 2, 3, 4]))
    losses, grads = [], []
    for scores in (hinge_token_scores, lambda t, m, v, p: token_score_matrix(t, m, v).T):
        loss = hardest_negative_triplet(scores(words, mask, regions, positives), positives, margin=0.5)
        losses.append(loss.detach())
        grads.append(torch.autograd.grad(loss, [words, regions]))
    assert losses[0].item() > 0 and torch.equal(losses[0], losses[1])
    sparse = hinge_token_scores(words, mask, regions, positives)
    assert torch.equal(sparse.detach(), token_score_matrix(words, mask, regions).T.detach())
    for mine, full in zip(grads[0], grads[1], strict=True):
        assert full.abs().sum() > 0 and torch.allclose(mine, full, atol=1e-6)
