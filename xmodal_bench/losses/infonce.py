"""Symmetric InfoNCE (CLIP's contrastive loss), aware of several positives per row.

Training batches hold one sample per caption, so two captions of the same image can meet in a
batch. Treating the second as a negative would punish the model for being right; instead the
target of each row is spread uniformly over all its positives (with one positive per row this is
exactly CLIP's cross-entropy).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def match_mask(ids: Tensor) -> Tensor:
    """[B, B] bool: True where samples i and j share an id (same image, or same person)."""
    return ids[:, None] == ids[None, :]


def soft_target_cross_entropy(logits: Tensor, positives: Tensor) -> Tensor:
    """Mean over rows of CE(softmax(logits_row), uniform over the row's positives)."""
    target = positives.to(logits.dtype)
    target = target / target.sum(dim=1, keepdim=True)
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def infonce(image: Tensor, text: Tensor, logit_scale: Tensor, positives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE between L2-normalised `image` [B, D] and `text` [B, D] embeddings.

    `logit_scale` multiplies the cosine similarities (CLIP learns its log); `positives` [B, B]
    marks matching pairs (default: the diagonal).
    """
    return score_infonce(image @ text.T, logit_scale, positives)


def score_infonce(scores: Tensor, logit_scale: Tensor, positives: Tensor | None = None) -> Tensor:
    """Symmetric InfoNCE over any batch score matrix [images, captions] (cosines, token scores)."""
    logits = logit_scale * scores
    if positives is None:
        labels = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
    return (
        soft_target_cross_entropy(logits, positives) + soft_target_cross_entropy(logits.T, positives.T)
    ) / 2
