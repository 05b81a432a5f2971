"""SW-HS: Sliding-Window sampling + Hard-Sample mining for the Kendall rank loss (BCLS, 2022).

The full Kendall loss compares every pair of candidates of every query: O(B^3) for a batch, and
most pairs are either trivially ordered or ordered only by noise in the pseudo-labels. SW-HS
sorts each query's candidates by their pseudo-label r (most relevant first) and, for the
candidate at sorted position p (the anchor), considers only the candidates at positions
p+1 .. p+window (the next less relevant ones: pairs whose relative order the pseudo-labels
state with the most local, least extrapolated evidence), drops pairs whose labels differ by no
more than `gap` (noise), and keeps only the hardest pair of each window, the one with the largest
soft discordance (`losses.kendall.discordance`). So each query contributes at most C - 1 pairs,
one per anchor: O(B^2) pairs for a batch, the triplet loss's order. Gradients flow through the
kept pairs only (the max is a mining decision, as in hard negative mining).

    loss(query) = mean over anchors with a valid pair of  max_{q in window(p), r_p - r_q > gap} term(p, q)
"""

from __future__ import annotations

import torch
from torch import Tensor

from xmodal_bench.losses.kendall import discordance, reduce_queries


def sliding_window_pairs(num: int, window: int, device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """(other [num, window] positions p+1..p+window, inside [num, window] bool: position < num).

    Row p lists the partners of anchor position p; the number of real pairs is
    sum_p min(window, num - 1 - p).
    """
    if window < 1:
        raise ValueError("window must be >= 1")
    anchor = torch.arange(num, device=device)[:, None]
    other = anchor + torch.arange(1, window + 1, device=device)[None, :]
    inside = other < num
    return other.clamp(max=max(num - 1, 0)), inside


def swhs_pairs(labels: Tensor, window: int, gap: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """(order [Q, C] candidates sorted by label, descending; other [C, W]; valid [Q, C, W] usable pairs)."""
    order = torch.argsort(labels, dim=1, descending=True, stable=True)
    sorted_labels = labels.gather(1, order)
    other, inside = sliding_window_pairs(labels.shape[1], window, labels.device)
    label_gap = sorted_labels[:, :, None] - sorted_labels[:, other]  # [Q, C, W], >= 0
    return order, other, inside[None] & (label_gap > gap)


def swhs_kendall_loss(
    scores: Tensor,
    labels: Tensor,
    window: int = 16,
    temperature: float = 0.1,
    gap: float = 0.0,
    reduction: str = "mean",
) -> Tensor:
    """Kendall rank loss on sliding-window pairs, hardest pair per window (see module doc).

    scores, labels [Q, C] (rows queries, columns candidates); `reduction` over queries.
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    order, other, valid = swhs_pairs(labels.to(scores.dtype), window, gap)
    sorted_scores = scores.gather(1, order)
    terms = discordance(sorted_scores[:, :, None] - sorted_scores[:, other], temperature)
    hardest = terms.masked_fill(~valid, -torch.inf).amax(dim=2)  # [Q, C]
    has_pair = valid.any(dim=2)
    hardest = torch.where(has_pair, hardest, torch.zeros_like(hardest))
    count = has_pair.sum(dim=1)
    per_query = hardest.sum(dim=1) / count.clamp(min=1)
    return reduce_queries(per_query, count > 0, reduction)
