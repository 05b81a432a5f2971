"""A fused compare-and-count tile kernel for the CPU (`count_tile.c`), built on first use.

torch has no fused compare-and-count: each direction of the caption protocol costs a comparison
pass that writes a mask and a reduction over it, on top of the matmul. The kernel reads a float32
score tile once and adds both directions' counts (row entries above a per-row threshold, column
entries above a per-column threshold), exactly: the counts are integers, the comparisons those
torch makes.

It is compiled with the system C compiler (`$CC`, else `cc`) into a per-user cache
(`$XDG_CACHE_HOME/xmodal-bench/`, keyed by the source, the flags and the CPU) and loaded with
ctypes, which releases the GIL during the call (the metrics' tile threads run in parallel).
`load_function` builds and loads the other C kernels the same way (`metrics.topk`). No
compiler, a failed build, or `XMODAL_BENCH_FUSED=0`: `available()` is False and callers keep the
torch path; nothing else changes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SOURCE = Path(__file__).resolve().with_name("count_tile.c")
_FLAGS = ("-O3", "-march=native", "-fPIC", "-shared", "-fno-strict-aliasing")
_LOCK = threading.Lock()
_FUNCTIONS: dict[tuple[Path, str], Any] = {}  # (source, name) -> loaded function, or None


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xmodal-bench" / "kernels"


def _build(path: Path = SOURCE) -> Path | None:
    """The library compiled from the C file `path` (built now if missing), or None when it cannot be."""
    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if compiler is None or not path.is_file():
        return None
    source = path.read_bytes()
    key = hashlib.sha256(source + " ".join((compiler, *_FLAGS, _cpu())).encode()).hexdigest()[:16]
    for folder in (_cache_dir(), Path(tempfile.gettempdir()) / f"xmodal-bench-{os.getuid()}"):
        target = folder / f"{path.stem}-{key}.so"
        if target.is_file():
            return target
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, partial = tempfile.mkstemp(dir=folder, suffix=".so.partial")
            os.close(fd)
            done = subprocess.run(
                [compiler, *_FLAGS, str(path), "-o", partial], capture_output=True, timeout=120
            )
            if done.returncode != 0:
                os.unlink(partial)
                return None
            os.replace(partial, target)  # atomic: a parallel build writes the same file
            return target
        except (OSError, subprocess.SubprocessError):
            continue
    return None


def load_function(path: Path, name: str, argtypes: list, restype: Any = None) -> Any | None:
    """The C function `name` of the file `path` (built and loaded on first use), or None when
    kernels are disabled (`XMODAL_BENCH_FUSED=0`) or it cannot be built. Loaded once per process."""
    with _LOCK:
        key = (path, name)
        if key not in _FUNCTIONS:
            fn = None
            if os.environ.get("XMODAL_BENCH_FUSED", "1") != "0":
                built = _build(path)
                try:
                    fn = getattr(ctypes.CDLL(str(built)), name) if built is not None else None
                except (OSError, AttributeError):
                    fn = None
                if fn is not None:
                    fn.restype, fn.argtypes = restype, argtypes
            _FUNCTIONS[key] = fn
        return _FUNCTIONS[key]


_COUNT_ARGTYPES = [ctypes.c_void_p, *[ctypes.c_int64] * 3, ctypes.c_void_p, ctypes.c_void_p]
_COUNT_ARGTYPES += [ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]


def _library() -> Any | None:
    return load_function(SOURCE, "xmb_count_tile", _COUNT_ARGTYPES, ctypes.c_int)


def available() -> bool:
    """Whether the kernel is built and loaded (builds it on the first call)."""
    return _library() is not None


def set_enabled(enabled: bool) -> None:
    """Use the kernels (when they build) or not; for tests and side-by-side benchmarks."""
    with _LOCK:
        _FUNCTIONS.clear()
    os.environ["XMODAL_BENCH_FUSED"] = "1" if enabled else "0"


def supports(scores: Tensor) -> bool:
    """A tile the kernel can count: float32 on the CPU, rows contiguous."""
    return scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.stride(-1) == 1


def count_tile(
    scores: Tensor,
    row_threshold: Tensor,
    col_threshold: Tensor,
    row_ge: bool,
    col_ge: bool,
    row_counts: Tensor,
    col_counts: Tensor,
) -> bool:
    """Add to `row_counts` [r] how many entries of each row of `scores` [r, c] are above
    `row_threshold` [r] (`>=` when `row_ge`), and to `col_counts` [c] the same per column against
    `col_threshold` [c]. Thresholds float32 and counts int64, contiguous, on the CPU.
    Returns False (nothing changed) when the kernel is unavailable: use the torch path then."""
    count = _library()
    if count is None or not supports(scores):
        return False
    rows, cols = scores.shape
    for t, dtype, n in (
        (row_threshold, torch.float32, rows),
        (col_threshold, torch.float32, cols),
        (row_counts, torch.int64, rows),
        (col_counts, torch.int64, cols),
    ):
        if t.dtype != dtype or not t.is_contiguous() or t.numel() != n or t.device.type != "cpu":
            raise ValueError(f"count_tile: expected a contiguous {dtype} CPU tensor of {n} elements")
    status = count(
        scores.data_ptr(),
        rows,
        cols,
        scores.stride(0),
        row_threshold.data_ptr(),
        col_threshold.data_ptr(),
        int(row_ge),
        int(col_ge),
        row_counts.data_ptr(),
        col_counts.data_ptr(),
    )
    return status == 0
