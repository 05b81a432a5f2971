"""Similarity Distribution Matching (SDM), the alignment loss of IRRA (Jiang & Ye, CVPR 2023).

For a batch of image and text embeddings with person ids, let S = cos(image, text) [B, B] and
tau the temperature. The predicted matching distribution of image i over the batch's captions
is p_i = softmax_j(S[i, j] / tau); the true one q_i is uniform over the captions that share
image i's pid (several in a batch when an identity has several images or captions). SDM is the
KL divergence KL(p_i || q_i) averaged over rows, computed for both directions and summed:

    sdm = mean_i KL(p_i2t || q) + mean_j KL(p_t2i || q),  KL(p || q) = sum p (log p - log(q + eps))

q is zero off the pid's columns, hence the eps (1e-8, as the official code) inside the log: the
probability a row puts on other identities is penalised by about -log(eps) per unit of mass.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from xmodal_bench.losses.infonce import match_mask


def matching_distribution(pids: Tensor) -> Tensor:
    """[B, B] row-normalised same-pid indicator: row i is uniform over the samples sharing pid i."""
    same = match_mask(pids).float()
    return same / same.sum(dim=1, keepdim=True)


def _kl_rows(logits: Tensor, target: Tensor, eps: float) -> Tensor:
    """mean over rows of KL(softmax(logits_row) || target_row), eps-smoothed target."""
    log_p = F.log_softmax(logits, dim=1)
    return (log_p.exp() * (log_p - torch.log(target + eps))).sum(dim=1).mean()


def sdm_loss(
    image: Tensor, text: Tensor, pids: Tensor, logit_scale: float | Tensor, eps: float = 1e-8
) -> Tensor:
    """SDM between `image` [B, D] and `text` [B, D] embeddings (L2-normalised here) with `pids` [B].

    `logit_scale` is 1 / temperature (IRRA: fixed, 1 / 0.02 = 50). Row i of the image-to-text
    direction pairs image i with every caption of the batch, and sample i's image and caption
    share pid i, so one pid vector labels both directions.
    """
    image = F.normalize(image.float(), dim=-1)
    text = F.normalize(text.float(), dim=-1)
    logits = logit_scale * image @ text.T  # [images, texts]
    target = matching_distribution(pids)  # symmetric, so it serves both directions
    return _kl_rows(logits, target, eps) + _kl_rows(logits.T, target, eps)
