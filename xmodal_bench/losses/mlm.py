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
    keys: tuple[Tensor, int, int] | None = None,
) -> tuple[Tensor, Tensor]:
    """Mask a batch of token ids [B, L]; return (masked ids [B, L], labels [B, L]).

    Labels hold the original id at selected positions and `IGNORE_INDEX` elsewhere. Random
    numbers come from `generator` (default: the global generator, seeded by Lightning), or with
    `keys = (caption ids [B], seed, step)` from a hash of (seed, step, caption, position): then a
    caption is masked the same way whichever batch, or batch slice on whichever device, it is in.
    """
    if (
        not 0.0 < prob <= 1.0
        or mask_fraction < 0
        or random_fraction < 0
        or mask_fraction + random_fraction > 1
    ):
        raise ValueError("need 0 < prob <= 1 and mask_fraction + random_fraction <= 1")
    maskable = (ids > 0) & (ids < mask_token_id)
    if keys is None:
        draw = torch.rand(ids.shape, generator=generator, device=ids.device)
        action = torch.rand(ids.shape, generator=generator, device=ids.device)
        random_ids = torch.randint(1, mask_token_id, ids.shape, generator=generator, device=ids.device)
    else:
        draw, action, word = (_keyed_uniform(ids.shape, keys, stream) for stream in (1, 2, 3))
        random_ids = 1 + (word * (mask_token_id - 1)).long().clamp(max=mask_token_id - 2)
    selected = maskable & (draw < prob)
    # at least one masked token per caption: the first maskable one becomes [MASK]
    empty = ~selected.any(dim=1) & maskable.any(dim=1)
    first = maskable.int().argmax(dim=1)
    rows = empty.nonzero().squeeze(1)
    selected[rows, first[rows]] = True
    action[rows, first[rows]] = 0.0
    to_mask = selected & (action < mask_fraction)
    to_random = selected & (action >= mask_fraction) & (action < mask_fraction + random_fraction)
    masked = torch.where(to_mask, torch.full_like(ids, mask_token_id), ids)
    masked = torch.where(to_random, random_ids, masked)
    labels = torch.where(selected, ids, torch.full_like(ids, IGNORE_INDEX))
    return masked, labels


_M32 = 0xFFFFFFFF


def _hash32(x: Tensor) -> Tensor:
    """An integer hash of 32-bit values held in int64 (no overflow: factors below 2^31)."""
    for _ in range(2):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def _keyed_uniform(shape: torch.Size, keys: tuple[Tensor, int, int], stream: int) -> Tensor:
    """Uniform [0, 1) numbers [B, L], a pure function of (seed, step, stream, caption, position)."""
    captions, seed, step = keys
    positions = torch.arange(shape[1], device=captions.device)
    h = _hash32(torch.full_like(captions, (seed * 1_000_003 + step * 7 + stream) & _M32))
    h = _hash32(h ^ (captions.long() & _M32))[:, None]
    h = _hash32(h ^ positions[None, :])
    return h.double().div(2**32).float()


def masked_lm_loss(logits: Tensor, labels: Tensor, count: float | Tensor | None = None) -> Tensor:
    """Mean cross-entropy over the positions whose label is not `IGNORE_INDEX`.

    `logits` [..., V] and `labels` [...]: either every position of a batch ([B, L, V] and
    [B, L]) or only the selected ones ([M, V] and [M]). `count`: divide the summed cross-entropy
    by this instead of the number of predicted positions (a batch split over devices divides by
    the global count, so the devices' losses add up to the global mean). With nothing to predict
    the loss is a differentiable zero instead of NaN.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    if not bool((flat_labels != IGNORE_INDEX).any()):
        return flat_logits.sum() * 0.0
    if count is None:
        return F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    return total / count


def masked_lm_accuracy(logits: Tensor, labels: Tensor) -> Tensor:
    """Fraction of predicted positions whose arg-max token is the label (IRRA's `mlm_acc`)."""
    keep = labels != IGNORE_INDEX
    if not bool(keep.any()):
        return logits.new_zeros(())
    return (logits.argmax(dim=-1)[keep] == labels[keep]).float().mean()
