"""IRRA's implicit relation reasoning (IRR) module: cross-modal transformer + masked-word head.

The masked caption's word tokens (queries) attend to the image tokens (keys and values) in one
cross-attention layer, the result goes through a stack of transformer blocks over the words and a
final LayerNorm, and an MLM head (dense, QuickGELU, LayerNorm, linear to the vocabulary) predicts
the masked words. Layout and initialisation follow IRRA (Jiang & Ye, CVPR 2023):

- `ln_pre_t` normalises the queries, `ln_pre_i` the keys/values; the cross-attention output is
  *not* added back to its input (no residual around the cross-attention);
- the blocks are CLIP's pre-LN residual blocks (4x MLP, QuickGELU), `width // 64` heads by default;
- weights are drawn like CLIP's text transformer: attention in-projections with std width^-1/2,
  output projections with width^-1/2 (2 depth)^-1/2, MLP in-projections with (2 width)^-1/2.

One deliberate difference: padding positions of the caption are masked out as keys of the
self-attention blocks (the reference code attends over all 77 positions, padding included), and
the sequence is cut after the batch's longest caption. The output at padding is never scored;
with the mask, a word's prediction no longer depends on how much padding the context length adds.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from open_clip.transformer import LayerNorm, QuickGELU, ResidualAttentionBlock
from torch import Tensor, nn


class CrossModalMLMHead(nn.Module):
    """Predict masked caption words from the caption's tokens and the image's tokens (IRRA's IRR)."""

    def __init__(self, width: int, vocab_size: int, depth: int = 4, heads: int | None = None) -> None:
        super().__init__()
        heads = heads or max(1, width // 64)
        if width % heads:
            raise ValueError(f"cross-modal width {width} is not divisible by {heads} heads")
        self.width, self.depth, self.heads = width, depth, heads
        self.ln_pre_t = LayerNorm(width)
        self.ln_pre_i = LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(width, heads, act_layer=QuickGELU, batch_first=True) for _ in range(depth)
        )
        self.ln_post = LayerNorm(width)
        self.mlm_head = nn.Sequential(
            OrderedDict(
                dense=nn.Linear(width, width),
                gelu=QuickGELU(),
                ln=LayerNorm(width),
                fc=nn.Linear(width, vocab_size),
            )
        )
        self._init_weights()

    def _init_weights(self) -> None:
        attn_std = self.width**-0.5
        proj_std = attn_std * (2 * max(1, self.depth)) ** -0.5
        fc_std = (2 * self.width) ** -0.5
        for attn in [self.cross_attn, *(block.attn for block in self.blocks)]:
            nn.init.normal_(attn.in_proj_weight, std=attn_std)
            nn.init.normal_(attn.out_proj.weight, std=proj_std)
        for block in self.blocks:
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.mlm_head.dense.weight, std=fc_std)
        nn.init.normal_(self.mlm_head.fc.weight, std=proj_std)

    def forward(
        self, text_tokens: Tensor, text_valid: Tensor, image_tokens: Tensor, positions: Tensor | None = None
    ) -> Tensor:
        """Vocabulary logits of the caption positions.

        text_tokens [B, L, D]: the masked caption's token features in the joint space;
        text_valid [B, L] bool: True at real tokens (start, words, end), False at padding;
        image_tokens [B, N, D]: the image's token features in the joint space (keys and values);
        positions [B, L] bool or None: where to predict. Returns [M, V] logits at the M True
        positions (row-major order), or [B, L', V] for every position up to the longest caption.
        """
        length = int(text_valid.sum(dim=1).max())  # captions are left-aligned: cut the all-padding tail
        text_tokens, text_valid = text_tokens[:, :length], text_valid[:, :length]
        image = self.ln_pre_i(image_tokens)
        x = self.cross_attn(self.ln_pre_t(text_tokens), image, image, need_weights=False)[0]
        padding = self._padding_bias(text_valid, x.dtype)
        for block in self.blocks:
            x = block(x, attn_mask=padding)
        x = self.ln_post(x)
        if positions is not None:
            x = x[positions[:, :length]]
        return self.mlm_head(x)

    def _padding_bias(self, valid: Tensor, dtype: torch.dtype) -> Tensor | None:
        """Additive attention bias [B * heads, L, L] that hides padding keys (None without padding)."""
        if bool(valid.all()):
            return None
        batch, length = valid.shape
        bias = torch.zeros(batch, 1, 1, length, dtype=dtype, device=valid.device)
        bias = bias.masked_fill(~valid[:, None, None, :], float("-inf"))
        return bias.expand(batch, self.heads, length, length).reshape(batch * self.heads, length, length)
