"""Masked language modelling: BERT-style caption masking and the loss on the masked positions.

Masking follows BERT as IRRA applies it to CLIP token ids: every maskable token is selected with
probability `prob` (0.15); a selected token becomes `[MASK]` with probability 0.8, a random token
with 0.1 and stays unchanged with the remaining 0.1; the model must predict the original token at
every selected position. A caption in which no token was drawn gets its first maskable token
replaced by `[MASK]`, so every caption contributes to the loss.

Which ids are maskable follows IRRA's layout of the CLIP vocabulary: the three highest ids are
`[MASK]`, start-of-text and end-of-text (IRRA gives `[MASK]` the id of the last BPE merge,
49405 of 49408), and 0 is padding. So a token is maskable when `0 < id < mask_token_id`, and
random replacements are drawn from the same range.

The masked caption is a new tensor: the clean caption is left untouched for the losses that
need it (IRRA's reference code masks a numpy view of the caption tensor and so corrupts the
clean caption too; we do not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label of positions that are not predicted (PyTorch's cross-entropy default)
CLIP_MASK_TOKEN_ID = 49405  # IRRA's [MASK]: the last BPE merge of CLIP's vocabulary ("jekyll</w>")


def mask_tokens(
    ids: Tensor,
    mask_token_id: int = CLIP_MASK_TOKEN_ID,
    prob: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask a batch of token ids [B, L]; return (masked ids [B, L], labels [B, L]).

    Labels hold the original id at selected positions and `IGNORE_INDEX` elsewhere. Random
    numbers come from `generator` (default: the global generator, seeded by Lightning).
    """
    if (
        not 0.0 < prob <= 1.0
        or mask_fraction < 0
        or random_fraction < 0
        or mask_fraction + random_fraction > 1
    ):
        raise ValueError("need 0 < prob <= 1 and mask_fraction + random_fraction <= 1")
    maskable = (ids > 0) & (ids < mask_token_id)
    draw = torch.rand(ids.shape, generator=generator, device=ids.device)
    action = torch.rand(ids.shape, generator=generator, device=ids.device)
    selected = maskable & (draw < prob)
    # at least one masked token per caption: the first maskable one becomes [MASK]
    empty = ~selected.any(dim=1) & maskable.any(dim=1)
    first = maskable.int().argmax(dim=1)
    rows = empty.nonzero().squeeze(1)
    selected[rows, first[rows]] = True
    action[rows, first[rows]] = 0.0
    to_mask = selected & (action < mask_fraction)
    to_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    random_ids = torch.randint(1, mask_token_id, ids.shape, generator=generator, device=ids.device)
    masked = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked, labels


def masked_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Mean cross-entropy over the positions whose label is not `IGNORE_INDEX`.

    `logits` [..., V] and `labels` [...]: either every position of a batch ([B, L, V] and
    [B, L]) or only the selected ones ([M, V] and [M]). With nothing to predict the loss is a
    differentiable zero instead of NaN.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    if not bool((flat_labels != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)


def masked_lm_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of predicted positions whose arg-max token is the label (IRRA's `mlm_acc`)."""
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return logits.new_zeros(())
    return (logits.argmax(dim=-1)[keep] == labels[keep]).float().mean()
