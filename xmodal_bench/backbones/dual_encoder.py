"""The shared backbone: an open_clip model that returns global *and* token features.

Every method is built on this one class, so that the benchmark compares heads and losses, not
backbone plumbing. open_clip's plain `CLIP` class drops text token outputs, so models are always
built with `force_custom_text=True` (text tower at `model.text`) and both towers are switched to
return `(pooled, tokens)`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import open_clip
from torch import Tensor, nn

from xmodal_bench.backbones.pretrained import resolve_pretrained
from xmodal_bench.backbones.weights import load_weights
from xmodal_bench.errors import UserError

CONFIG_DIR = Path(__file__).parent / "configs"
open_clip.add_model_config(CONFIG_DIR)  # makes the tiny CPU configs (xmb-*) known to open_clip

PAD_TOKEN_ID = 0  # open_clip's SimpleTokenizer pads with 0


class DualEncoder(nn.Module):
    """Image and text towers of one open_clip model.

    `encode_image(x) -> (global [B, D], tokens [B, N, W])` and
    `encode_text(ids) -> (global [B, D], tokens [B, L, W], mask [B, L])`: global features are the
    model's projected embeddings (not normalised); tokens are the last layer's patch / word states
    before projection (use `project_*_tokens` to map them into the joint space).
    """

    def __init__(
        self,
        model: str = "xmb-tiny",
        pretrained: str | None = None,
        image_size: int | Sequence[int] | None = None,
        context_length: int | None = None,
    ) -> None:
        super().__init__()
        if model not in open_clip.list_models():
            raise UserError(
                f"unknown open_clip model {model!r}; known: xmb-tiny, ViT-B-16, ViT-B-32, ... "
                "(see open_clip.list_models())"
            )
        pretrained = resolve_pretrained(pretrained, model)
        is_file = pretrained is not None and Path(pretrained).exists()
        if (
            pretrained is not None
            and not is_file
            and pretrained not in open_clip.list_pretrained_tags_by_model(model)
        ):
            raise UserError(
                f"pretrained={pretrained!r} is neither a file nor a known tag of {model}; tags: "
                f"{', '.join(open_clip.list_pretrained_tags_by_model(model)) or 'none'}"
            )
        self.model_name = model
        with _quiet_random_init():
            self.model = open_clip.create_model(
                model,
                pretrained=None if is_file else pretrained,
                force_custom_text=True,
                force_image_size=tuple(image_size) if isinstance(image_size, Sequence) else image_size,
                force_context_length=context_length,
            )
        if is_file:
            load_weights(self.model, Path(pretrained))
        self.model.visual.output_tokens = True
        self.model.text.output_tokens = True

    @property
    def embed_dim(self) -> int:
        return int(self.model.text.output_dim)

    @property
    def image_width(self) -> int:
        return int(self.model.visual.transformer.width)

    @property
    def text_width(self) -> int:
        return int(self.model.text.width)

    @property
    def context_length(self) -> int:
        return int(self.model.context_length)

    @property
    def vocab_size(self) -> int:
        return int(self.model.vocab_size)

    @property
    def logit_scale(self) -> nn.Parameter:
        return self.model.logit_scale

    def encode_image(self, images: Tensor) -> tuple[Tensor, Tensor]:
        pooled, tokens = self.model.visual(images)
        return pooled, tokens

    def encode_text(self, ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        pooled, tokens = self.model.text(ids)
        return pooled, tokens, ids != PAD_TOKEN_ID

    def project_image_tokens(self, tokens: Tensor) -> Tensor:
        """Map patch tokens [B, N, W] into the joint space [B, N, D] with the image projection."""
        proj = self.model.visual.proj
        return tokens if proj is None else tokens @ proj

    def project_text_tokens(self, tokens: Tensor) -> Tensor:
        """Map word tokens [B, L, W] into the joint space [B, L, D] with the text projection."""
        proj = self.model.text.text_projection
        if proj is None:
            return tokens
        return proj(tokens) if isinstance(proj, nn.Linear) else tokens @ proj

    def tokenizer(self) -> open_clip.tokenizer.SimpleTokenizer:
        """The tokenizer that matches this model (picklable, so DataLoader workers can use it)."""
        return open_clip.get_tokenizer(self.model_name, context_length=self.context_length)

    def image_size(self) -> tuple[int, int]:
        size = self.model.visual.image_size
        return (size, size) if isinstance(size, int) else tuple(size)


class _DropRandomInitNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("No pretrained weights loaded")


@contextlib.contextmanager
def _quiet_random_init() -> Iterator[None]:
    """open_clip warns whenever it builds a model without weights; here that is often the intent."""
    notice = _DropRandomInitNotice()
    logging.getLogger().addFilter(notice)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(notice)


def create_backbone(
    model: str = "xmb-tiny",
    pretrained: str | None = None,
    image_size: int | Sequence[int] | None = None,
    context_length: int | None = None,
) -> DualEncoder:
    """Factory used by every method (one place to build the backbone)."""
    return DualEncoder(model, pretrained=pretrained, image_size=image_size, context_length=context_length)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["PAD_TOKEN_ID", "DualEncoder", "count_parameters", "create_backbone"]
