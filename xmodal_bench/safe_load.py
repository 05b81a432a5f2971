"""Read a torch file that came from outside the running process without running anything in it.

A `.pt` / `.ckpt` file is a pickle, and unpickling can call any Python function the file names.
`safe_load` reads with `torch.load(weights_only=True)`: tensors, containers and plain values
only. Every checkpoint and weights file a user or a folder hands to the suite goes through it.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from xmodal_bench.errors import UserError


class UnreadableFile(UserError):
    """The file is not a torch file at all (truncated, garbage, another format); `reason` says why."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class RefusedFile(UserError):
    """The file asks to build a Python object (a pickle payload): refused, nothing built or run."""


def safe_load(path: str | Path, what: str = "checkpoint", mmap: bool = False) -> Any:
    """`torch.load(path, weights_only=True)`; every failure is one UserError naming `path`."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        text = " ".join(str(exc).split())
        named = re.search(r"GLOBAL ([\w.]+)", text)
        if named is None:  # not a pickle of allowed values: a damaged or foreign file
            raise UnreadableFile(
                f"{path}: not a readable {what} (not a torch file)", "not a torch file"
            ) from None
        raise RefusedFile(
            f"{path}: refused to load this {what}: it asks to build the Python object {named.group(1)}, "
            "and files may hold only tensors and plain data (a checkpoint written by xmodal-bench never "
            "needs more); nothing in it was run"
        ) from None
    except Exception as exc:  # truncated zip, not a torch file, ...
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}"
        raise UnreadableFile(f"{path}: not a readable {what} ({reason})", reason) from None
