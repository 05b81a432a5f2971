"""CLIP baseline (Radford et al., ICML 2021): symmetric InfoNCE with a learnable temperature.

The reference point every other method is compared against: the shared backbone's projected
global embeddings, L2-normalised, trained with the contrastive loss over in-batch pairs. The
temperature is the backbone's own `logit_scale` (its log is learned), clamped at 100 as in CLIP.
Captions of the same image (on person data: images of the same person) that meet in a batch
count as positives, not negatives.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor

from xmodal_bench.config import require
from xmodal_bench.losses import infonce
from xmodal_bench.methods.base import RetrievalMethod, ScoreSupervision, TrainStep
from xmodal_bench.registry import register_method


@dataclass
class CLIPConfig:
    max_logit_scale: float = 100.0  # CLIP clamps its learned temperature at 1 / 100

    def __post_init__(self) -> None:
        require(self.max_logit_scale > 0, "clip.max_logit_scale must be positive")


@register_method("clip", CLIPConfig)
class CLIP(RetrievalMethod):
    """Dual encoder trained with symmetric InfoNCE (learnable temperature)."""

    supervision = ScoreSupervision(binary_term="infonce", hardest_negative=False, reduction="mean")
    learns_temperature = True

    def train_step(self, batch: dict[str, Tensor], ids: dict[str, Tensor]) -> TrainStep:
        image, _ = self.backbone.encode_image(batch["image"])
        text, _, _ = self.backbone.encode_text(batch["text"])
        image, text = self.gather(F.normalize(image, dim=-1), F.normalize(text, dim=-1))
        positives = self.positives(ids)
        scale = self.backbone.logit_scale.exp().clamp(max=self.cfg.clip.max_logit_scale)
        loss = infonce(image, text, scale, positives=positives)
        return TrainStep({"infonce": loss}, image @ text.T, positives, {"logit_scale": scale.detach()})
