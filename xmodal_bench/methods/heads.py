"""Transformer heads that several methods put on top of the backbone's tokens.

`SlotTransformer` reads a sequence [slot; tokens] and returns the output at the slot: a summary of
the tokens that starts from the backbone's own pooled embedding. TGDT's token-guided global
branch and ALADIN's matching head are both this module.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def transformer_encoder(
    dim: int, heads: int, ff_dim: int, dropout: float, layers: int
) -> nn.TransformerEncoder:
    """A post-norm, batch-first transformer encoder (nested tensors off: padding masks vary per batch)."""
    layer = nn.TransformerEncoderLayer(dim, heads, ff_dim, dropout, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


def zero_linear(dim: int) -> nn.Linear:
    """A `dim` x `dim` linear layer with zero weight and bias: a residual correction that starts at 0."""
    layer = nn.Linear(dim, dim)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SlotTransformer(nn.Module):
    """A transformer over [slot; tokens]; the output is the slot's position, [B, D] (not normalised).

    `residual=True` returns `slot + W out` instead, with W zero-initialised: the head starts as the
    identity on the slot (the backbone's pretrained embedding) and learns a correction, instead of
    starting from a random transform of it (what a freshly initialised post-norm transformer is).
    """

    def __init__(
        self, dim: int, heads: int, ff_dim: int, dropout: float, layers: int, residual: bool = False
    ) -> None:
        super().__init__()
        self.encoder = transformer_encoder(dim, heads, ff_dim, dropout, layers)
        self.correction = zero_linear(dim) if residual else None

    def forward(self, slot: Tensor, tokens: Tensor, padding: Tensor | None = None) -> Tensor:
        """slot [B, D], tokens [B, L, D], padding [B, L] (True = ignore) -> [B, D]."""
        sequence = torch.cat([slot[:, None, :], tokens], dim=1)
        if padding is not None:
            padding = torch.cat([padding.new_zeros(padding.shape[0], 1), padding], dim=1)
        out = self.encoder(sequence, src_key_padding_mask=padding)[:, 0]
        return out if self.correction is None else slot + self.correction(out)
