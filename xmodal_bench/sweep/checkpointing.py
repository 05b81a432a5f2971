"""Checkpoints a killed run can resume from: atomic writes, and finding the last good one.

Lightning's own `TorchCheckpointIO` serialises to memory and then writes through an fsspec
transaction whose temporary file lives in the system temp folder; when that folder is on another
filesystem the final move is a copy, so a kill during it leaves a truncated `last.ckpt`, and a kill
before it leaves a stray file in /tmp. `AtomicCheckpointIO` writes next to the target, fsyncs and
renames, so `last.ckpt` is always the previous complete checkpoint or the new complete one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from xmodal_bench.atomic import atomic_open, remove_stale_temps
from xmodal_bench.errors import UserError

LAST = "last.ckpt"


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose local saves are temp file + fsync + `os.replace` in the same folder."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):  # remote storage: fsspec's own transaction
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        with atomic_open(path, "wb") as handle:
            torch.save(checkpoint, handle)


def remove_partial_saves(directory: Path) -> None:
    """Delete temp files a killed save left behind (never a complete checkpoint)."""
    remove_stale_temps(directory, "*.ckpt")


def resumable_checkpoint(directory: Path) -> tuple[Path, int] | None:
    """(`directory/last.ckpt`, its global step) when there is one to resume from, else None.

    The file is opened memory-mapped (only the zip directory and the small entries are read), so a
    damaged file is reported as one clear line instead of a traceback from deep inside `fit`.
    """
    path = directory / LAST
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        step = int(state["global_step"])
    except Exception as exc:  # any failure to read it means it cannot be resumed from
        raise UserError(
            f"cannot resume from {path}: unreadable checkpoint ({type(exc).__name__}); "
            "delete it or rerun without --resume to start over"
        ) from None
    return path, step
