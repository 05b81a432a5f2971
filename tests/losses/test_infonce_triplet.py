"""InfoNCE and the hardest-negative triplet loss against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xmodal_bench.losses import hardest_negative_triplet, infonce, match_mask


def test_infonce_with_one_positive_per_row_is_clip_cross_entropy() -> None:
    torch.manual_seed(0)
    image, text = F.normalize(torch.randn(5, 8), dim=-1), F.normalize(torch.randn(5, 8), dim=-1)
    logits = 10.0 * image @ text.T
    labels = torch.arange(5)
    expected = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    assert infonce(image, text, torch.tensor(10.0)) == pytest.approx(expected.item(), rel=1e-6)
    assert infonce(
        image, text, torch.tensor(10.0), positives=torch.eye(5, dtype=torch.bool)
    ) == pytest.approx(expected.item(), rel=1e-6)


def test_infonce_spreads_the_target_over_captions_of_the_same_image() -> None:
    # scores L (image rows, caption columns): captions 0 and 1 both describe image 0
    scores = torch.tensor([[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [0.0, 0.0, 2.0]])
    positives = match_mask(torch.tensor([0, 0, 1]))
    assert positives.tolist() == [[True, True, False], [True, True, False], [False, False, True]]
    # rows 0 and 1: half the target on each of two logits 2 -> -log(e^2 / (2e^2 + 1));
    # row 2: -log(e^2 / (e^2 + 2)); the matrix is symmetric, so both directions agree
    e2 = math.exp(2)
    expected = (2 * -math.log(e2 / (2 * e2 + 1)) - math.log(e2 / (e2 + 2))) / 3
    image, text = torch.eye(3), scores.T  # image @ text.T == scores
    assert infonce(image, text, torch.tensor(1.0), positives=positives).item() == pytest.approx(
        expected, rel=1e-6
    )


def test_triplet_hand_computed() -> None:
    scores = torch.tensor([[0.9, 0.5, 0.1], [0.6, 0.4, 0.3], [0.2, 0.8, 0.7]])
    # i2t: row0 max(0.2+0.5-0.9, 0.2+0.1-0.9)->0 ; row1 max(0.2+0.6-0.4, 0.2+0.3-0.4)=0.4 ; row2 max(0.2+0.2-0.7, 0.2+0.8-0.7)=0.3
    # t2i: col0 max(0.2+0.6-0.9, 0.2+0.2-0.9)->0 ; col1 max(0.2+0.5-0.4, 0.2+0.8-0.4)=0.6 ; col2 max(0.2+0.1-0.7, 0.2+0.3-0.7)->0
    assert hardest_negative_triplet(scores, margin=0.2).item() == pytest.approx(0.4 + 0.3 + 0.6)
    assert hardest_negative_triplet(scores, margin=0.2, reduction="mean").item() == pytest.approx(1.3 / 3)


def test_triplet_never_uses_marked_positives_as_negatives() -> None:
    scores = torch.tensor([[0.5, 0.9], [0.9, 0.5]])
    assert hardest_negative_triplet(scores, margin=0.1).item() == pytest.approx(4 * 0.5)
    both_positive = torch.ones(2, 2, dtype=torch.bool)
    assert hardest_negative_triplet(scores, positives=both_positive, margin=0.1).item() == 0.0


def test_triplet_is_zero_when_every_positive_wins_by_the_margin() -> None:
    scores = torch.eye(4) * 0.9
    assert hardest_negative_triplet(scores, margin=0.2).item() == 0.0
