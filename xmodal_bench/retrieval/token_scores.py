"""Fine-grained image-text score from token features: "max over image tokens, pooled over words".

    s(t, v) = scale x pool over valid words w of t of  max over image tokens n of v of  <t_w, v_n>

With L2-normalised tokens the inner products are cosines. `WordPooling` says how words are
pooled: `mean` (the score stays a cosine in [-1, 1] whatever the caption length) or `sum` (what
the released TGDT (x10) and ALADIN ("MrSw") compute: the score grows with the caption, and so do
its spread, a margin's meaning and a softmax's sharpness). TGDT uses it as its local score and
ALADIN as its alignment head; the two-stage engine uses it to re-rank a shortlist. Two shapes:
every text against every image of a batch (`token_score_matrix`, training and exhaustive
evaluation), and aligned pairs (`token_score_pairs`, re-ranking a shortlist);
`hinge_token_scores` gives a batch matrix for a max-violation hinge at a fraction of the backward cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from xmodal_bench.errors import UserError

# dtypes a method may store its gallery tokens in (float16 halves the evaluation memory)
TOKEN_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def token_dtype(name: str, key: str) -> torch.dtype:
    """The torch dtype called `name` (config key `key`); anything else is a UserError."""
    if name not in TOKEN_DTYPES:
        raise UserError(f"{key}={name!r}; choose {', '.join(TOKEN_DTYPES)}")
    return TOKEN_DTYPES[name]


@dataclass(frozen=True)
class WordPooling:
    """How a caption's per-word best matches become one score: `scale` x (mean or sum over words)."""

    reduction: str = "mean"  # mean | sum
    scale: float = 1.0

    def __post_init__(self) -> None:
        if self.reduction not in WORD_REDUCTIONS:
            raise UserError(f"word reduction {self.reduction!r}; choose {' or '.join(WORD_REDUCTIONS)}")
        if not self.scale > 0:
            raise UserError(f"token score scale must be positive, got {self.scale}")

    def __call__(self, values: Tensor, mask: Tensor) -> Tensor:
        """Pool `values` [..., L] over the positions where `mask` [..., L] is True."""
        mask = mask.to(values.dtype)
        total = (values * mask).sum(-1)
        if self.reduction == "mean":
            total = total / mask.sum(-1).clamp(min=1.0)
        return total * self.scale if self.scale != 1.0 else total


WORD_REDUCTIONS = ("mean", "sum")
MEAN = WordPooling()


def token_score_matrix(
    text_tokens: Tensor,
    text_mask: Tensor,
    image_tokens: Tensor,
    chunk: int = 256,
    pooling: WordPooling = MEAN,
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
        rows.append(pooling(best, mask[:, None, :].expand_as(best)))
    return torch.cat(rows)


def token_score_pairs(
    text_tokens: Tensor, text_mask: Tensor, image_tokens: Tensor, pooling: WordPooling = MEAN
) -> Tensor:
    """Scores [P] of aligned pairs: text p (tokens [P, L, D], mask [P, L]) with image p ([P, N, D])."""
    sim = torch.einsum("pld,pnd->pln", text_tokens, image_tokens)
    return pooling(sim.amax(dim=-1), text_mask)


def hinge_token_scores(
    text_tokens: Tensor,
    text_mask: Tensor,
    image_tokens: Tensor,
    positives: Tensor,
    pooling: WordPooling = MEAN,
) -> Tensor:
    """The batch's score matrix [images, captions] for a hardest-negative hinge, cheaply.

    Values equal `token_score_matrix(...).T` exactly. A max-violation hinge only differentiates
    through the positive pairs (diagonal) and each row's and column's hardest negative, so the
    full matrix is computed without autograd and only those <= 3B entries are recomputed with it
    (added as `x - x.detach()`, which leaves the values bit-identical): same loss, same gradients,
    without the backward pass through the [B, B, L, N] similarity tensor.
    """
    size = positives.shape[0]
    with torch.no_grad():
        full = token_score_matrix(text_tokens, text_mask, image_tokens, pooling=pooling).T.contiguous()
        negatives = full.masked_fill(positives, -torch.inf)
        rows = torch.arange(size, device=full.device)
        image = torch.cat([rows, rows, negatives.argmax(0)])
        caption = torch.cat([rows, negatives.argmax(1), rows])
        pair = torch.unique(image * size + caption)
        image, caption = pair // size, pair % size
    live = token_score_pairs(text_tokens[caption], text_mask[caption], image_tokens[image], pooling)
    return full.index_put((image, caption), full[image, caption] + (live - live.detach()))


def word_mask(ids: Tensor, mask: Tensor) -> Tensor:
    """Caption words: non-padding tokens other than the start (position 0) and end (highest id) markers.

    Both released methods score words only: TGDT and ALADIN drop BERT's [CLS] and [SEP]; here the
    tokenizer's start- and end-of-text tokens (the end token is CLIP's pooled embedding)."""
    words = mask.clone()
    words[:, 0] = False
    words.scatter_(1, ids.argmax(dim=1, keepdim=True), False)  # open_clip's EOT has the largest id
    return words
