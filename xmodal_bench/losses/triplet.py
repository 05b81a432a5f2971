"""Triplet ranking loss with the hardest in-batch negative (VSE++'s "max violation").

For a batch score matrix S [B, B] (row i = image i, column j = caption j, S[i, i] the matching
pair) and margin m:

    i2t: for each image i, max over negative captions j of [m + S[i, j] - S[i, i]]_+
    t2i: for each caption j, max over negative images i of [m + S[i, j] - S[j, j]]_+

and the loss sums (VSE++, TGDT, ALADIN) or averages both directions. Pairs marked in `positives`
(e.g. another caption of the same image in the batch) are never used as negatives.

`mean_negative_triplet` averages the violations over each anchor's negatives instead of taking
the hardest: the warm-up of hinge-trained methods from random weights, where the max-violation
hinge collapses every embedding to one point (all scores equal, loss stuck at 2 B m).
"""

from __future__ import annotations

import torch
from torch import Tensor


def hinge_violations(scores: Tensor, positives: Tensor | None, margin: float) -> tuple[Tensor, Tensor]:
    """Hinge violations of every (row, column) pair against the row's and the column's own pair."""
    if positives is None:
        positives = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    diagonal = scores.diagonal()
    i2t = (margin + scores - diagonal[:, None]).clamp(min=0).masked_fill(positives, 0)
    t2i = (margin + scores - diagonal[None, :]).clamp(min=0).masked_fill(positives, 0)
    return i2t, t2i


def hardest_negative_triplet(
    scores: Tensor, positives: Tensor | None = None, margin: float = 0.2, reduction: str = "sum"
) -> Tensor:
    """Max-violation triplet loss over both directions of a square score matrix (see module doc)."""
    i2t, t2i = hinge_violations(scores, positives, margin)
    per_row = i2t.amax(dim=1) + t2i.amax(dim=0)
    return per_row.sum() if reduction == "sum" else per_row.mean()


def mean_negative_triplet(scores: Tensor, positives: Tensor | None = None, margin: float = 0.2) -> Tensor:
    """Triplet hinge averaged over each anchor's negatives (not the hardest), summed over anchors."""
    if positives is None:
        positives = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
    i2t, t2i = hinge_violations(scores, positives, margin)
    negatives = (~positives).to(scores.dtype)
    return (i2t.sum(1) / negatives.sum(1).clamp(min=1)).sum() + (
        t2i.sum(0) / negatives.sum(0).clamp(min=1)
    ).sum()
