"""Zero-shot: a pretrained dual encoder evaluated as it is, with no training step.

The first row of every retrieval table (and the core of CLIP_benchmark): how far the pretrained
model ranks before any fine-tuning, so each method's row says what its training added. Any
open_clip model and weights (`backbone.model`, `backbone.pretrained`: a tag, a local file, or
`synthclip` at the tiny scale) is scored by the cosine of its projected embeddings under every
protocol. `xmodal-bench zeroshot` runs it; `zeroshot` is also a method name a sweep can list.
"""

from __future__ import annotations

from torch import Tensor

from xmodal_bench.errors import UserError
from xmodal_bench.methods.base import RetrievalMethod, TrainStep
from xmodal_bench.registry import register_method


@register_method("zeroshot")
class ZeroShot(RetrievalMethod):
    """A pretrained model evaluated without training (cosine of its projected embeddings)."""

    trains = False

    def train_step(self, batch: dict[str, Tensor]) -> TrainStep:
        raise UserError("zeroshot evaluates a model as it is: it has no training step")
