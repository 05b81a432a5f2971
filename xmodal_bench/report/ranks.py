"""Per-query ranks of a run, saved beside its results: what significance tests are computed from.

`ranks.npz` holds, for every inference mode, the protocol's named rank arrays
(`{mode}/{name}`, e.g. `fused/t2i`, `global/5k/i2t`; 0-based int64, person ranks [queries,
positives] padded with -1), and the per-query values of the protocol's id metrics
(`{mode}/eccv/t2i_map_at_r`: float64, NaN for rows that are not the metric's queries); the
primary mode also holds each query's Kendall tau (`{mode}/tau/t2i`, `{mode}/tau/i2t`: float64,
NaN where not measured, `bcls.tau`). Written with numpy (no pickle), read with
`allow_pickle=False`.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xmodal_bench.atomic import atomic_write_bytes
from xmodal_bench.errors import UserError

RANKS_FILE = "ranks.npz"


def save_ranks(folder: Path, ranks: dict[str, dict[str, Tensor]]) -> Path:
    """Write {mode: {name: ranks}} to `folder/ranks.npz` atomically."""
    arrays = {
        f"{mode}/{name}": value.cpu().numpy()
        for mode, named in ranks.items()
        for name, value in named.items()
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(folder) / RANKS_FILE
    atomic_write_bytes(path, buffer.getvalue())
    return path


def load_ranks(folder: Path) -> dict[str, dict[str, Tensor]]:
    """{mode: {name: ranks}} of a run folder; a missing or unreadable file is one UserError."""
    path = Path(folder) / RANKS_FILE
    if not path.is_file():
        raise UserError(f"{path} not found: the run was made before per-query ranks were saved; rerun it")
    try:
        with np.load(path, allow_pickle=False) as data:
            out: dict[str, dict[str, Tensor]] = {}
            for key in data.files:
                mode, _, name = key.partition("/")
                out.setdefault(mode, {})[name] = torch.from_numpy(data[key])
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not a readable ranks file ({exc})") from None
    return out
