"""Named pretrained starts of the backbone: `backbone.pretrained=synthclip`, `none`, a tag or a file.

- `synthclip`: the tiny scale's pretrained CLIP (the `xmb-tiny` model trained with InfoNCE on the
  `synth_pretrain` corpus by `xmodal-bench pretrain`). It ships with the package as
  `weights/synthclip-xmb-tiny.safetensors` (float16, about 7.5 MB) beside a record of how it was
  made (`.json`: sha256, the command, the corpus, the training run's figures), so every clone starts
  from the same weights and the quick start never waits for a pretraining run. `make pretrain`
  rebuilds it (the same bytes on the same machine; `--install` puts a rebuilt file in place).
- `none` (or null): random initialisation, training from scratch.
- anything else: an open_clip tag of the model (`openai` for ViT-B-16) or a local weights file
  (open_clip `.pt` / `.bin` / `.safetensors`, or a `.ckpt` written by `bench`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from xmodal_bench.errors import UserError

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
NAMED = {"synthclip": ("xmb-tiny", "synthclip-xmb-tiny.safetensors")}
FROM_SCRATCH = ("none", "null", "")


def named_weights(name: str) -> tuple[str, Path]:
    """(model the weights belong to, path of the shipped file) of a named start such as `synthclip`."""
    model, file_name = NAMED[name]
    return model, WEIGHTS_DIR / file_name


def resolve_pretrained(pretrained: str | None, model: str) -> str | None:
    """What `backbone.pretrained` means for `model`: None (random), a tag, or a file path."""
    if pretrained is None or str(pretrained).strip().lower() in FROM_SCRATCH:
        return None
    if pretrained in NAMED:
        owner, path = named_weights(pretrained)
        if model != owner:
            raise UserError(
                f"backbone.pretrained={pretrained} holds weights of {owner}, not {model}; "
                "use it with the tiny scale, or name a tag or file of this model"
            )
        if not path.is_file():
            raise UserError(f"{path} is missing from this installation; rebuild it with `make pretrain`")
        return str(path)
    return pretrained


def weights_record(name: str) -> dict[str, Any]:
    """The shipped record of how the named weights were made (its sha256 first)."""
    _, path = named_weights(name)
    record_path = path.with_suffix(".json")
    try:
        return json.loads(record_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{record_path}: missing or unreadable ({exc})") from None


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
