"""Checkpoints: written atomically, read safely, turned back into the method that wrote them.

**Reading never runs code.** A checkpoint is a pickle, and unpickling can call any Python
function the file names. Every checkpoint and weights file a user or a folder hands in is read
with `torch.load(weights_only=True)`: tensors, containers and plain values only. The project's own
checkpoints hold nothing else (the run config is saved as plain data), so nothing needs an
allow-list; a file that names any other object is refused with one line, and the object is never
built. `SafeCheckpointIO` applies the same rule to Lightning's own loads (`--resume`, testing the
best checkpoint).

**Writing is atomic.** Lightning's `TorchCheckpointIO` serialises to memory and then writes through
an fsspec transaction whose temporary file lives in the system temp folder; when that folder is
on another filesystem the final move is a copy, so a kill during it leaves a truncated
`last.ckpt`. `SafeCheckpointIO` writes next to the target, fsyncs and renames, so `last.ckpt` is
always the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig

from xmodal_bench.atomic import atomic_open, remove_stale_temps
from xmodal_bench.config import saved_config, with_values
from xmodal_bench.errors import UserError
from xmodal_bench.registry import create_method, method_sections
from xmodal_bench.safe_load import RefusedFile, UnreadableFile, safe_load

LAST = "last.ckpt"


class SafeCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO that saves atomically and loads with `weights_only=True`."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> Any:
        return safe_load(path)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A checkpoint written by `bench`, read safely; anything else is one UserError."""
    checkpoint = safe_load(path)
    config = (
        (checkpoint.get("hyper_parameters") or {}).get("config") if isinstance(checkpoint, dict) else None
    )
    if not isinstance(config, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path}: not an xmodal-bench checkpoint (no saved run config or state_dict)")
    return checkpoint


def checkpoint_config(checkpoint: dict[str, Any], path: str | Path) -> DictConfig:
    """The run config saved in `checkpoint`, checked against today's schema (one line if it does not fit)."""
    saved = checkpoint["hyper_parameters"]["config"]
    try:
        _, sections = method_sections(str(saved.get("method", "")))
        return saved_config(saved, sections)
    except UserError as exc:
        raise UserError(f"{path}: its saved run config does not fit: {exc}") from None


def restore_method(checkpoint: dict[str, Any], cfg: DictConfig, path: str | Path) -> Any:
    """The method `cfg` describes, with every weight from `checkpoint` (strict: each must fit).

    Nothing is downloaded and no `run:` source is needed: the checkpoint holds every weight.
    """
    method = create_method(with_values(cfg, {"backbone": {"pretrained": None}}))
    try:
        method.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as exc:
        detail = " ".join(str(exc).split())
        raise UserError(f"{path}: its weights do not fit method {cfg.method!r}: {detail[:300]}") from None
    return method


def remove_partial_saves(directory: Path) -> None:
    """Delete temp files a killed save left behind (never a complete checkpoint)."""
    remove_stale_temps(directory, "*.ckpt")


def resumable_checkpoint(directory: Path) -> tuple[Path, int] | None:
    """(`directory/last.ckpt`, its global step) when there is one to resume from, else None.

    Read memory-mapped (only the zip directory and the small entries are touched) and safely, so a
    damaged or foreign file is one clear line instead of a traceback from deep inside `fit`.
    """
    path = directory / LAST
    if not path.is_file():
        return None
    hint = "delete it or rerun without --resume to start over"
    try:
        state = safe_load(path, mmap=True)
        step = int(state["global_step"])
    except UnreadableFile as exc:
        raise UserError(f"cannot resume from {path}: unreadable checkpoint ({exc.reason}); {hint}") from None
    except RefusedFile as exc:
        raise UserError(f"cannot resume: {exc}; {hint}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(
            f"cannot resume from {path}: unreadable checkpoint ({type(exc).__name__}); {hint}"
        ) from None
    return path, step
