"""Triplet ranking loss with Soft Negative mining (Triplet-SN, BCLS: Li et al., 2022).

VSE++'s max-violation triplet keeps only the hardest in-batch negative of every anchor. From
random or weak weights that negative is mostly noise, and the hinge is lowered fastest by
shrinking every score difference (the embeddings collapse). Triplet-SN keeps all violating
negatives and weighs them by a softmax of their scores at temperature `temperature`:

    i2t, image i:   sum_j  w_ij [m + S[i, j] - S[i, i]]_+ ,   w_i. = softmax_j(S[i, j] / t) over
                    the negatives j of i that violate the margin
    t2i, caption j: the same over the column, against S[j, j]

The weights are a mining decision and are detached (no gradient through the softmax), like the
argmax of hard negative mining. As t -> 0 the weights become one-hot on the highest-scoring
violating negative, which is the hardest negative, so the loss tends to `hardest_negative_triplet`;
as t -> inf it becomes the mean over the violating negatives. Pairs marked in `positives` (another
caption of the same image, or the same person) are never negatives.
"""

from __future__ import annotations

import torch
from torch import Tensor

from xmodal_bench.losses.triplet import hinge_violations


def _soft_max_violation(violation: Tensor, scores: Tensor, temperature: float, dim: int) -> Tensor:
    """Softmax(scores / t)-weighted sum of `violation` along `dim`, over the entries with violation > 0."""
    active = violation > 0
    logits = (scores.detach() / temperature).masked_fill(~active, -torch.inf)
    weights = torch.softmax(logits, dim=dim).nan_to_num(0.0)  # rows without a violation: all -inf
    return (weights * violation).sum(dim=dim)


def soft_negative_triplet(
    scores: Tensor,
    positives: Tensor | None = None,
    margin: float = 0.2,
    temperature: float = 0.05,
    reduction: str = "sum",
) -> Tensor:
    """Triplet-SN over both directions of a square score matrix [images, captions] (see module doc).

    `reduction`: "sum" over anchors (like `hardest_negative_triplet`'s default) or "mean".
    """
    if temperature <= 0:
        raise ValueError("temperature must be positive")
    i2t, t2i = hinge_violations(scores, positives, margin)
    per_anchor = _soft_max_violation(i2t, scores, temperature, 1) + _soft_max_violation(
        t2i, scores, temperature, 0
    )
    return per_anchor.sum() if reduction == "sum" else per_anchor.mean()
