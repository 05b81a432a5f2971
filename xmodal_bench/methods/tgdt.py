"""TGDT (Liu et al., IEEE TIP 2023): token-guided dual transformer, CMC loss, two-stage inference.

"Efficient Token-Guided Image-Text Retrieval with Consistent Multimodal Contrastive Training";
official code LCFractal/TGDT (read for reference; this is a separate implementation).

Per modality, on top of the shared backbone's token outputs:
- local branch: a linear projection of the patch / word tokens into the joint space (width D)
  and a 2-layer transformer over them; its L2-normalised outputs are the local tokens;
- token-guided global branch: a 2-layer transformer over [global slot; local tokens] (padding
  words masked); the slot's output, L2-normalised, is the global embedding. The slot is the
  backbone's own pooled embedding (image CLS / text EOT, projected), so the branch refines the
  backbone's global feature guided by the tokens (the released code puts the first token of the
  sequence, BERT's CLS, in that position).
- `residual_slot` / `residual_local` (not released; on at `tiny`): each branch returns the
  backbone's own feature (pooled embedding; tokens through the towers' projections) plus a
  zero-initialised correction, so fine-tuning starts from the pretrained start's global and token
  alignment instead of from random heads.
Fine score s_loc(t, v) = 10 x the sum over the caption's words of the max over image tokens of
cosine, as released (`word_reduction: sum`, `local_scale: 10`; `retrieval.token_scores`); words are
the caption's tokens without the start and end markers (the released code drops [CLS] and [SEP]).
At that scale s_loc is about 10 x the caption length, so in the released fused score the global
cosine is a tie-breaker (about 1% of the total) and the 0.2 margin of the local hinge is small.

Loss (`losses.cmc`): global hardest-negative hinge (margin 0.2, both directions) + intra-modal
consistency (margin 0.3) + local hardest-negative hinge on s_loc (margin 0.2); all sums over the
batch, as released. The local term's batch matrix is built by
`retrieval.token_scores.hinge_token_scores` (exact values and gradients, backward only through the
entries the hinge uses).

Inference: modes `fused` (primary: global top-K, K=100 for t2i and 50 for i2t, re-scored by
s_global + fusion_lambda x s_loc, the released d_m + d_l at lambda 1), `global` (stage 1 only)
and `local` (s_loc over the whole gallery, only when the gallery has at most
`tgdt.local_max_gallery` items). Ranks are exact: a positive outside the top K keeps its global rank.

Deviations from the released code, on purpose:
- Gradients reach the backbone: the released model detaches the local tokens before the global
  branch and never trains its lower encoders (BERT / region features), so no loss trains the
  local branch at all; here every term trains the backbone and both branches.
- A positive outside the stage-1 shortlist keeps its stage-1 rank; the released evaluation
  counts it as rank 0 (a hit), which inflates every recall of the fused mode.
- The released training applies the local hinge to the *global* branch's token outputs but
  re-ranks with the *local* branch's tokens; here both use the local branch's tokens.
- The released code also drops the caption's last word (an off-by-one in its slicing, `[1:-2]`);
  here every word counts. Captions of the same image (on person data: images of the same person)
  met in a batch are not used as each other's negatives (the released code treats them as
  negatives).
- Backbone: the shared open_clip dual encoder (ViT patches instead of bottom-up regions, CLIP's
  text tower instead of BERT); heads width = the backbone's embed dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from xmodal_bench.config import require, require_fraction
from xmodal_bench.errors import UserError
from xmodal_bench.losses import cmc_loss
from xmodal_bench.methods.base import RetrievalMethod, ScoreSupervision, TrainStep
from xmodal_bench.methods.heads import SlotTransformer, transformer_encoder, zero_linear
from xmodal_bench.methods.token_scoring import TokenScoreMixin
from xmodal_bench.registry import register_method
from xmodal_bench.retrieval.evaluation import InferenceMode, exhaustive_mode, fused_mode, global_mode
from xmodal_bench.retrieval.token_scores import WordPooling, token_dtype, word_mask
from xmodal_bench.retrieval.two_stage import check_k


@dataclass
class TGDTConfig:
    heads: int = 4
    local_layers: int = 2  # transformer depth of the local branch
    global_layers: int = 2  # transformer depth of the token-guided global branch
    ff_dim: int = 2048
    dropout: float = 0.1
    residual_slot: bool = False  # global branch = slot + a zero-initialised correction (not released)
    # local branch = the backbone's own token projection + a zero-initialised correction (not released)
    residual_local: bool = False
    margin: float = 0.2  # inter-modal hinges (global and local)
    consistency_margin: float = 0.3
    global_loss_weight: float = 1.0
    consistency_loss_weight: float = 1.0
    local_loss_weight: float = 1.0
    # epochs (may be fractional) whose hinges average over all negatives before the hardest one
    # takes over; 0 = the paper (pretrained encoders). From random weights the hardest-negative
    # hinge collapses every embedding to one point (see losses.cmc).
    mean_negative_epochs: float = 0.0
    k_t2i: int = 100  # stage-1 shortlist per text query
    k_i2t: int = 50  # stage-1 shortlist per image query
    word_reduction: str = "sum"  # s_loc pools words by sum (released) or mean (a cosine, length-free)
    local_scale: float = 10.0  # s_loc = local_scale x pooled word scores (released: 10 x sum)
    fusion_lambda: float = 1.0  # fused = s_global + lambda * s_loc (released: d_m + d_l)
    local_max_gallery: int = 5000  # report the exhaustive `local` mode up to this gallery size
    eval_token_dtype: str = "float32"  # dtype of the stored gallery tokens (float16 halves memory)

    def __post_init__(self) -> None:
        require(self.heads >= 1 and self.ff_dim >= 1, "tgdt.heads and tgdt.ff_dim must be positive")
        require(self.local_layers >= 1 and self.global_layers >= 1, "tgdt layer counts must be at least 1")
        require_fraction("tgdt.dropout", self.dropout)
        require(self.margin >= 0 and self.consistency_margin >= 0, "tgdt margins must be >= 0")
        require(
            min(self.global_loss_weight, self.consistency_loss_weight, self.local_loss_weight) >= 0,
            "tgdt loss weights must be >= 0",
        )
        require(self.mean_negative_epochs >= 0, "tgdt.mean_negative_epochs must be >= 0")
        check_k(self.k_t2i, "tgdt.k_t2i")
        check_k(self.k_i2t, "tgdt.k_i2t")
        require(self.fusion_lambda >= 0, "tgdt.fusion_lambda must be >= 0")
        WordPooling(self.word_reduction, self.local_scale)  # tgdt.word_reduction / local_scale in range
        require(self.local_max_gallery >= 0, "tgdt.local_max_gallery must be >= 0")
        token_dtype(self.eval_token_dtype, "tgdt.eval_token_dtype")


class LocalBranch(nn.Module):
    """Projection of backbone tokens into the joint space, then a transformer over them.

    With `residual_local` it returns `base + W out` instead, `base` the tokens in the backbone's own
    joint space and W zero-initialised: the branch starts as the pretrained token alignment and learns a
    correction, instead of starting from a random projection (what a fresh branch is).
    """

    def __init__(self, in_dim: int, dim: int, cfg: TGDTConfig) -> None:
        super().__init__()
        self.proj = nn.Linear(in_dim, dim)
        self.encoder = transformer_encoder(dim, cfg.heads, cfg.ff_dim, cfg.dropout, cfg.local_layers)
        self.correction = zero_linear(dim) if cfg.residual_local else None

    def forward(self, tokens: Tensor, base: Tensor | None = None, padding: Tensor | None = None) -> Tensor:
        """tokens [B, L, W] (backbone width), base [B, L, D] (residual only), padding [B, L] -> [B, L, D]."""
        out = self.encoder(self.proj(tokens), src_key_padding_mask=padding)
        if self.correction is None:
            return out
        if base is None:
            raise ValueError("a residual local branch needs the projected backbone tokens")
        return base + self.correction(out)


@register_method("tgdt", TGDTConfig)
class TGDT(TokenScoreMixin, RetrievalMethod):
    """Token-guided dual transformer with the CMC loss; two-stage (global then token) retrieval."""

    supervision = ScoreSupervision(binary_term="global", hardest_negative=True, reduction="sum")

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        c = self.cfg.tgdt
        self.token_dtype = token_dtype(c.eval_token_dtype, "tgdt.eval_token_dtype")
        self.word_pooling = WordPooling(c.word_reduction, c.local_scale)
        dim = self.backbone.embed_dim
        if dim % c.heads:
            raise UserError(f"tgdt.heads={c.heads} must divide the embedding width {dim}")
        self.image_local = LocalBranch(self.backbone.image_width, dim, c)
        self.text_local = LocalBranch(self.backbone.text_width, dim, c)
        # token-guided global branch: [pooled embedding; local tokens] -> refined global feature
        self.image_global = SlotTransformer(
            dim, c.heads, c.ff_dim, c.dropout, c.global_layers, c.residual_slot
        )
        self.text_global = SlotTransformer(
            dim, c.heads, c.ff_dim, c.dropout, c.global_layers, c.residual_slot
        )

    # ------------------------------------------------------------------ encoders

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """(global [B, D], local tokens [B, N, D]), both L2-normalised."""
        pooled, tokens = self.backbone.encode_image(images)
        base = self.backbone.project_image_tokens(tokens) if self.cfg.tgdt.residual_local else None
        local = self.image_local(tokens, base)
        return F.normalize(self.image_global(pooled, local), dim=-1), F.normalize(local, dim=-1)

    def encode_text(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(global [B, D], local tokens [B, L, D], word mask [B, L]): both branches see every token
        (padding masked); the fine score counts the words (`word_mask`)."""
        pooled, tokens, mask = self.backbone.encode_text(ids)
        base = self.backbone.project_text_tokens(tokens) if self.cfg.tgdt.residual_local else None
        local = self.text_local(tokens, base, ~mask)
        glob = F.normalize(self.text_global(pooled, local, ~mask), dim=-1)
        return glob, F.normalize(local, dim=-1), word_mask(ids, mask)

    def image_features(self, images: Tensor) -> dict[str, Tensor]:
        glob, tokens = self.encode_image(images)
        return {"global": glob.float(), "tokens": tokens.to(self.token_dtype)}

    def text_features(self, ids: Tensor) -> dict[str, Tensor]:
        glob, tokens, mask = self.encode_text(ids)
        return {
            "global": glob.float(),
            "tokens": tokens.to(self.token_dtype),
            "mask": mask.to(torch.uint8),  # uint8, not bool: gathers on every backend
        }

    # ------------------------------------------------------------------ training

    def train_step(self, batch: dict[str, Tensor], ids: dict[str, Tensor]) -> TrainStep:
        c = self.cfg.tgdt
        image, image_tokens = self.encode_image(batch["image"])
        text, text_tokens, mask = self.encode_text(batch["text"])
        image, image_tokens, text, text_tokens, mask = self.gather(
            image, image_tokens, text, text_tokens, mask
        )
        positives = self.positives(ids)
        hardest = self.hardest_negatives(c.mean_negative_epochs)
        fine = self.batch_token_scores(text_tokens, mask, image_tokens, positives, hardest)
        terms = cmc_loss(
            image,
            text,
            fine,
            positives=positives,
            margin=c.margin,
            consistency_margin=c.consistency_margin,
            hardest=hardest,
        )
        weights = {
            "global": c.global_loss_weight,
            "consistency": c.consistency_loss_weight,
            "local": c.local_loss_weight,
        }
        losses = {name: weights[name] * value for name, value in terms.items() if weights[name] > 0}
        # the primary (fused) mode ranks its shortlist by the global cosine: stage 1
        return TrainStep(losses, image @ text.T, positives, {"hardest": float(hardest)})

    # ------------------------------------------------------------------ inference

    def inference_modes(self) -> list[InferenceMode]:
        c = self.cfg.tgdt
        return [
            fused_mode(self.fine_scorer, k_t2i=c.k_t2i, k_i2t=c.k_i2t, lam=c.fusion_lambda),
            global_mode(),
            exhaustive_mode(self.fine_scorer, name="local", max_gallery=c.local_max_gallery),
        ]
