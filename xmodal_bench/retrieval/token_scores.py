"""Fine-grained image-text score from token features: the "max over regions, mean over words" score.

    s(t, v) = mean over valid words w of t of  max over image tokens n of v of  <t_w, v_n>

With L2-normalised tokens the inner products are cosines. TGDT uses it as its local score and
ALADIN as its alignment head; the two-stage engine uses it to re-rank a shortlist. Two shapes:
every text against every image of a batch (`token_score_matrix`, training and exhaustive
evaluation), and aligned pairs (`token_score_pairs`, re-ranking a shortlist).
"""

from __future__ import annotations

import torch
from torch import Tensor


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` [..., L] over positions where `mask` [..., L] is True."""
    mask = mask.to(values.dtype)
    return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)


def token_score_matrix(
    text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, chunk: int = 256
) -> Tensor:
    """Scores [T, I] of every text (tokens [T, L, D], mask [T, L]) against every image ([I, N, D]).

    Computed in chunks of texts so memory stays O(chunk x I x L x N).
    """
    rows = []
    for start in range(0, text_tokens.shape[0], chunk):
        words = text_tokens[start : start + chunk]
        mask = text_mask[start : start + chunk]
        sim = torch.einsum("tld,ind->tiln", words, image_tokens)  # [t, I, L, N]
        best = sim.amax(dim=-1)  # best image token per word: [t, I, L]
        rows.append(_masked_mean(best, mask[:, None, :].expand_as(best)))
    return torch.cat(rows)


def token_score_pairs(text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor) -> Tensor:
    """Scores [P] of aligned pairs: text p (tokens [P, L, D], mask [P, L]) with image p ([P, N, D])."""
    sim = torch.einsum("pld,pnd->pln", text_tokens, image_tokens)
    return _masked_mean(sim.amax(dim=-1), text_mask)
