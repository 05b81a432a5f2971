"""Load backbone weights from a local file: open_clip checkpoints or our own Lightning checkpoints.

open_clip's own loader handles its formats (old CLIP layout, position-embedding resizing); a
Lightning checkpoint nests the open_clip state dict under `state_dict` with a module prefix
(e.g. `backbone.model.`), which is stripped here first. Every file is read with
`torch.load(weights_only=True)` (safetensors by the safetensors reader): a file that asks to
build Python objects is refused with one line and nothing in it runs.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from open_clip.factory import load_checkpoint
from safetensors.torch import load_file
from torch import nn

from xmodal_bench.errors import UserError
from xmodal_bench.safe_load import UnreadableFile, safe_load

# A key every open_clip ViT state dict has; its prefix in a file tells us what to strip.
_ANCHOR_KEYS = ("visual.conv1.weight", "visual.trunk.patch_embed.proj.weight")


def extract_open_clip_state(checkpoint: dict) -> dict[str, torch.Tensor]:
    """Return the open_clip part of a checkpoint dict with any module prefix removed."""
    state = checkpoint.get("state_dict", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UserError("weights file holds no state dict")
    for key in state:
        for anchor in _ANCHOR_KEYS:
            if key.endswith(anchor):
                prefix = key[: -len(anchor)]
                return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    raise UserError("weights file holds no open_clip image tower (no key ending in 'visual.conv1.weight')")


def load_weights(model: nn.Module, path: Path) -> None:
    """Load `path` (open_clip .pt/.bin/.safetensors, or a Lightning .ckpt) into an open_clip model.

    Weights stored in half precision (the shipped `synthclip`) are read as float32 first, so
    open_clip's position-embedding resizing (to another image size) works on the CPU.
    """
    if path.suffix == ".safetensors":
        try:
            checkpoint = load_file(str(path))
        except Exception as exc:  # a truncated or foreign file
            raise UserError(f"cannot read weights file {path}: {' '.join(str(exc).split())[:200]}") from None
    else:
        try:
            checkpoint = safe_load(path, what="weights file")
        except UnreadableFile as exc:
            raise UserError(f"cannot read weights file {path}: {exc.reason}") from None
    try:
        state = extract_open_clip_state(checkpoint)
    except UserError as exc:
        raise UserError(f"{path}: {exc}") from None
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    # Hand the clean state dict to open_clip's loader so its conversions and resizing apply.
    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        torch.save(state, tmp.name)
        try:
            load_checkpoint(model, tmp.name)
        except RuntimeError as exc:
            raise UserError(f"weights in {path} do not fit the model: {str(exc).splitlines()[0]}") from exc
