"""Identity (ID) loss: one classifier over the training identities, shared by both modalities.

IRRA (after Zheng et al., "Dual-path convolutional image-text embeddings with instance loss",
arXiv:1711.05535) classifies the image and the caption global features of a pair into the
pair's identity with the *same* linear layer, so the two modalities are pushed towards one
cluster per identity. The loss is the mean of the two cross-entropies.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def identity_loss(image_logits: Tensor, text_logits: Tensor, pids: Tensor) -> Tensor:
    """(CE(image_logits, pids) + CE(text_logits, pids)) / 2; logits [B, classes], pids [B]."""
    return (F.cross_entropy(image_logits.float(), pids) + F.cross_entropy(text_logits.float(), pids)) / 2


def identity_accuracy(logits: Tensor, pids: Tensor) -> Tensor:
    """Fraction of rows whose arg-max class is the pid (a training diagnostic)."""
    return (logits.argmax(dim=-1) == pids).float().mean()
