"""Kendall rank loss (BCLS: Li et al., 2022): a differentiable Kendall-tau surrogate.

For one query with candidates c (scores s_c from the model, continuous pseudo-labels r_c), Kendall's
tau is the mean over candidate pairs of sign(s_a - s_b) * sign(r_a - r_b). Replacing the score
sign by tanh((s_a - s_b) / t) makes it differentiable; the loss is the soft fraction of discordant
pairs, (1 - soft tau) / 2, over the pairs whose labels differ by more than `gap` (smaller label
differences are within the pseudo-labels' noise and carry no ordering):

    term(a, b) = (1 - tanh((s_a - s_b) / t)) / 2      for r_a - r_b > gap
    loss(query) = mean of term over those pairs

A term is ~0 for a concordant pair whose scores are well apart (relative to t), 1/2 for a tie and
~1 for a discordant pair, so the loss is smallest for a perfectly concordant ordering and grows
with every discordant pair. Cost O(C^2) per query (O(B^3) for a batch's square score matrix;
`losses.swhs` brings it back to O(B^2)). Rows are queries, columns their candidates: pass the
[images, captions] matrix for image->text and its transpose for text->image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def discordance(score_gap: Tensor, temperature: float) -> Tensor:
    """Soft discordance of a pair whose more relevant member scores `score_gap` above the other: in (0, 1)."""
    return (1 - torch.tanh(score_gap / temperature)) / 2


def reduce_queries(per_query: Tensor, has_pairs: Tensor, reduction: str) -> Tensor:
    """Mean (or sum) over the queries that have at least one valid pair; 0 (with a graph) when none has."""
    kept = per_query * has_pairs.to(per_query.dtype)
    if reduction == "sum":
        return kept.sum()
    return kept.sum() / has_pairs.sum().clamp(min=1)


def kendall_rank_loss(
    scores: Tensor,
    labels: Tensor,
    temperature: float = 0.1,
    gap: float = 0.0,
    valid: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Mean soft discordance over all candidate pairs of each query (see module doc).

    scores, labels [Q, C]; `valid` [Q, C] bool marks usable candidates (default: all);
    `reduction` over queries: "mean" or "sum" (each query contributes its mean over pairs).
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    labels = labels.to(scores.dtype)
    label_gap = labels[:, :, None] - labels[:, None, :]  # [Q, a, b]
    pairs = label_gap > gap  # a more relevant than b: each unordered pair at most once
    if valid is not None:
        pairs &= valid[:, :, None] & valid[:, None, :]
    terms = discordance(scores[:, :, None] - scores[:, None, :], temperature)
    count = pairs.sum(dim=(1, 2))
    per_query = (terms * pairs).sum(dim=(1, 2)) / count.clamp(min=1)
    return reduce_queries(per_query, count > 0, reduction)
