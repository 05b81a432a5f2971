"""BCLS losses: Triplet-SN, the Kendall rank loss and SW-HS."""

from __future__ import annotations

import itertools

import pytest
import torch

from xmodal_bench.losses.kendall import kendall_rank_loss
from xmodal_bench.losses.swhs import sliding_window_pairs, swhs_kendall_loss, swhs_pairs
from xmodal_bench.losses.triplet import hardest_negative_triplet
from xmodal_bench.losses.triplet_sn import soft_negative_triplet


def test_triplet_sn_tends_to_the_hardest_negative_triplet() -> None:
    torch.manual_seed(0)
    scores = torch.randn(10, 10)
    positives = torch.eye(10, dtype=torch.bool)
    positives[0, 1] = positives[1, 0] = True  # a second caption of an image is never a negative
    hardest = hardest_negative_triplet(scores, positives, margin=0.2)
    gaps = [
        (soft_negative_triplet(scores, positives, 0.2, t) - hardest).abs().item() for t in (1.0, 0.1, 1e-3)
    ]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-4
    # at high temperature it averages the violating negatives: below the hardest, above zero
    assert 0 < soft_negative_triplet(scores, positives, 0.2, 100.0) < hardest


def test_triplet_sn_gradients_reach_every_violating_negative_and_vanish_without_violation() -> None:
    scores = torch.tensor([[0.5, 0.4, 0.35], [0.0, 0.5, 0.1], [0.0, 0.0, 0.5]], requires_grad=True)
    soft_negative_triplet(scores, margin=0.2, temperature=0.1).backward()
    assert scores.grad[0, 1] > 0 and scores.grad[0, 2] > 0  # not only the hardest one
    clear = torch.eye(3, requires_grad=True)  # every positive beats every negative by 1 > margin
    loss = soft_negative_triplet(clear, margin=0.2, temperature=0.1)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(clear.grad).all() and clear.grad.abs().sum() == 0


def test_kendall_loss_is_minimal_for_a_concordant_order_and_grows_with_discordance() -> None:
    labels = torch.linspace(1, 0, 8)[None]
    concordant = torch.linspace(1, -1, 8)[None]
    losses = []
    for swaps in range(4):  # swap more and more adjacent pairs
        scores = concordant.clone()
        for k in range(swaps):
            scores[0, [2 * k, 2 * k + 1]] = scores[0, [2 * k + 1, 2 * k]]
        losses.append(kendall_rank_loss(scores, labels, temperature=0.05).item())
    assert losses[0] < 1e-3 and all(a < b for a, b in itertools.pairwise(losses))
    reverse = kendall_rank_loss(-concordant, labels, temperature=0.05).item()
    assert reverse > 0.99  # every pair discordant
    # random scores sit in between, and the surrogate has gradients
    scores = torch.randn(1, 8, requires_grad=True)
    loss = kendall_rank_loss(scores, labels, temperature=0.5)
    loss.backward()
    assert 0 < loss.item() < 1 and scores.grad.abs().sum() > 0


def test_kendall_loss_ignores_pairs_within_the_label_gap_and_queries_without_pairs() -> None:
    scores = torch.tensor([[0.0, 1.0, 0.5], [0.3, 0.2, 0.1]])
    labels = torch.tensor([[0.50, 0.48, 0.0], [0.2, 0.2, 0.2]])  # row 1: all tied, no pair
    with_gap = kendall_rank_loss(scores, labels, temperature=0.01, gap=0.05)
    # with the gap only (0, 2) and (1, 2) count: (0, 2) discordant, (1, 2) concordant -> 1/2
    assert with_gap.item() == pytest.approx(0.5, abs=1e-3)
    assert kendall_rank_loss(
        scores, labels, temperature=0.01, gap=0.05, reduction="sum"
    ).item() == pytest.approx(0.5, abs=1e-3)


@pytest.mark.parametrize(("num", "window"), [(10, 3), (10, 1), (5, 16), (1, 4)])
def test_swhs_pair_counts_follow_the_window(num: int, window: int) -> None:
    other, inside = sliding_window_pairs(num, window)
    assert inside.sum().item() == sum(min(window, num - 1 - p) for p in range(num))
    anchor = torch.arange(num)[:, None].expand_as(other)
    assert (other[inside] > anchor[inside]).all() and (other[inside] - anchor[inside] <= window).all()
    # with distinct labels every window pair is valid, and hard mining keeps one pair per anchor
    labels = torch.rand(3, num)
    _, _, valid = swhs_pairs(labels, window)
    assert valid.sum().item() == 3 * inside.sum().item()
    assert valid.any(dim=2).sum().item() == 3 * max(num - 1, 0)


def test_swhs_keeps_the_hardest_pair_of_each_window() -> None:
    labels = torch.tensor([[0.9, 0.7, 0.5, 0.3]])
    scores = torch.tensor([[0.0, 1.0, 0.2, 0.1]], requires_grad=True)  # candidate 1 scores above 0
    loss = swhs_kendall_loss(scores, labels, window=2, temperature=0.01)
    # anchors 0, 1, 2 (sorted = given order): 0 vs {1, 2}: (0,1) discordant -> 1; 1 vs {2, 3}: concordant
    # -> 0; 2 vs {3}: concordant -> 0. Mean over anchors: 1/3
    assert loss.item() == pytest.approx(1 / 3, abs=1e-3)
    loss.backward()
    assert torch.isfinite(scores.grad).all()
    # a window as wide as the list with all pairs ranks like the full loss on a two-candidate query
    two_scores, two_labels = torch.tensor([[0.2, 0.6]]), torch.tensor([[1.0, 0.0]])
    assert swhs_kendall_loss(two_scores, two_labels, 4, 0.1) == pytest.approx(
        kendall_rank_loss(two_scores, two_labels, 0.1).item()
    )


def test_swhs_is_finite_when_no_pair_is_valid() -> None:
    scores = torch.randn(2, 5, requires_grad=True)
    loss = swhs_kendall_loss(scores, torch.zeros(2, 5), window=3, temperature=0.1, gap=0.05)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(scores.grad).all()
