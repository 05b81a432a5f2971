"""CLIP baseline (Radford et al., ICML 2021): symmetric InfoNCE with a learnable temperature.

The reference point every other method is compared against: the shared backbone's projected
global embeddings, L2-normalised, trained with the contrastive loss over in-batch pairs. The
temperature is the backbone's own `logit_scale` (its log is learned), clamped at 100 as in CLIP.
Captions of the same image (on person data: images of the same person) that meet in a batch
count as positives, not negatives.

`token_loss_weight` > 0 adds FILIP's token-wise contrastive term (Yao et al., "FILIP:
Fine-grained Interactive Language-Image Pre-Training", ICLR 2022): the same InfoNCE over the
late-interaction score "mean over the caption's words of the max over patches of the cosine"
(`retrieval.token_scores`, the score TGDT and ALADIN fine-tune), so patch and word tokens align
as well as the pooled embeddings. The CLIP baseline leaves it off; the tiny scale's pretrained
start (`benchmarks/pretrain/synthclip.yaml`) is trained with it, as the papers' backbones come
with tokens that carry alignment (VinVL, BERT over detector regions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from xmodal_bench.config import require
from xmodal_bench.losses import infonce, score_infonce
from xmodal_bench.methods.base import RetrievalMethod, ScoreSupervision, TrainStep
from xmodal_bench.registry import register_method
from xmodal_bench.retrieval.token_scores import token_score_matrix, word_mask


@dataclass
class CLIPConfig:
    max_logit_scale: float = 100.0  # CLIP clamps its learned temperature at 1 / 100
    token_loss_weight: float = 0.0  # + this x FILIP's token-wise InfoNCE; 0 = CLIP

    def __post_init__(self) -> None:
        require(self.max_logit_scale > 0, "clip.max_logit_scale must be positive")
        require(self.token_loss_weight >= 0, "clip.token_loss_weight must be >= 0")


@register_method("clip", CLIPConfig)
class CLIP(RetrievalMethod):
    """Dual encoder trained with symmetric InfoNCE (learnable temperature)."""

    supervision = ScoreSupervision(binary_term="infonce", hardest_negative=False, reduction="mean")
    learns_temperature = True

    def train_step(self, batch: dict[str, Tensor], ids: dict[str, Tensor]) -> TrainStep:
        c = self.cfg.clip
        image, patches = self.backbone.encode_image(batch["image"])
        text, words, mask = self.backbone.encode_text(batch["text"])
        image, text = self.gather(F.normalize(image, dim=-1), F.normalize(text, dim=-1))
        positives = self.positives(ids)
        scale = self.backbone.logit_scale.exp().clamp(max=c.max_logit_scale)
        losses = {"infonce": infonce(image, text, scale, positives=positives)}
        if c.token_loss_weight > 0:
            tokens = self.token_scores(patches, words, word_mask(batch["text"], mask))
            losses["token_infonce"] = c.token_loss_weight * score_infonce(tokens, scale, positives)
        return TrainStep(losses, image @ text.T, positives, {"logit_scale": scale.detach()})

    def token_scores(self, patches: Tensor, words: Tensor, keep: Tensor) -> Tensor:
        """FILIP's late-interaction scores [images, captions] of the (gathered) batch: the towers'
        projected, L2-normalised tokens; words without the start / end markers (`keep`)."""
        patches = F.normalize(self.backbone.project_image_tokens(patches), dim=-1)
        words = F.normalize(self.backbone.project_text_tokens(words), dim=-1)
        patches, words, keep = self.gather(patches, words, keep)
        return token_score_matrix(words, keep, patches).T
