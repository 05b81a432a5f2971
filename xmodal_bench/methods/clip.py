"""CLIP baseline (Radford et al., ICML 2021): symmetric InfoNCE with a learnable temperature.

The reference point every other method is compared against: the shared backbone's projected
global embeddings, L2-normalised, trained with the contrastive loss over in-batch pairs. The
temperature is the backbone's own `logit_scale` (its log is learned), clamped at 100 as in CLIP.
Captions of the same image that meet in a batch count as positives, not negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from xmodal_bench.losses import infonce, match_mask
from xmodal_bench.methods.base import RetrievalMethod
from xmodal_bench.registry import register_method


@dataclass
class CLIPConfig:
    max_logit_scale: float = 100.0


@register_method("clip", CLIPConfig)
class CLIP(RetrievalMethod):
    """Dual encoder trained with symmetric InfoNCE (learnable temperature)."""

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        image, _ = self.backbone.encode_image(batch["image"])
        text, _, _ = self.backbone.encode_text(batch["text"])
        image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
        self.record_train_scores(image @ text.T)  # for training plugins (BCLS)
        scale = self.backbone.logit_scale.exp().clamp(max=self.cfg.clip.max_logit_scale)
        loss = infonce(image, text, scale, positives=match_mask(batch["image_index"]))
        return self.log_losses({"infonce": loss}, batch_size=len(image), logit_scale=scale.detach())
