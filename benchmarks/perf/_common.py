"""Shared pieces of the perf scripts: timing, peak memory, the machine line, JSON lines, markdown.

Every script prints one JSON object per measured case on stdout (one line each, `"case"` first)
and writes a markdown table under benchmarks/perf/results/. Timings on a shared machine move with
the load: each script therefore reports ratios measured in the same process (ours vs the bare
matmul, shards vs folder, Lightning vs a bare loop) next to the absolute numbers, and the load
average at start and end.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import torch

from xmodal_bench.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict:
    """What the numbers were measured on."""
    info = {
        "cpu": _cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "memory_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "torch": torch.__version__,
        "load_average": round(os.getloadavg()[0], 2),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_line(info: dict) -> str:
    gpu = f", GPU {info['gpu']}" if "gpu" in info else ""
    return (
        f"{info['cpu']}, {info['cores']} cores ({info['torch_threads']} torch threads), "
        f"{info['memory_gib']} GiB RAM{gpu}, torch {info['torch']}, load average {info['load_average']}"
    )


def emit(record: dict) -> dict:
    """Print one case as one JSON line (flushed: a long run shows progress)."""
    print(json.dumps(record), flush=True)
    return record


def _rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Peak extra memory while the block runs: CUDA allocator peak, or host RSS sampled every 2 ms.

    Host RSS counts what the process touched (torch's CPU allocator returns large blocks to the
    OS), so it is the memory a user would see in `top`, above what was resident at the start.
    """

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.peak_bytes = 0

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            return self
        self._base = _rss_bytes()
        self._max = self._base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self._max = max(self._max, _rss_bytes())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
            return
        self._stop.set()
        self._thread.join()
        self.peak_bytes = max(0, max(self._max, _rss_bytes()) - self._base)

    @property
    def mib(self) -> float:
        return round(self.peak_bytes / 2**20, 1)


def timed(fn: Callable, repeats: int = 1, device: torch.device | str = "cpu", warmup: bool = False):
    """(wall seconds, CPU seconds of this process, result) of the fastest of `repeats` runs of `fn()`.

    CPU seconds (all threads) move less with the load than wall time on a shared machine.
    CUDA work is synchronised.
    """
    device = torch.device(device)
    if warmup:
        fn()
    best, cpu, result = float("inf"), float("inf"), None
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall = time.perf_counter() - start
        if wall < best:
            best, cpu = wall, time.process_time() - start_cpu
    return best, cpu, result


def peak_rss_mib() -> float:
    """The process's lifetime peak resident memory (MiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_markdown(name: str, title: str, header: list[str], rows: Iterable[list], notes: list[str]) -> Path:
    """benchmarks/perf/results/{name}.md: a title, a table and notes (machine, load, command)."""
    lines = [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    lines += [""] + [f"{note}  " for note in notes]
    path = RESULTS / f"{name}.md"
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


def fmt_s(seconds: float) -> str:
    if seconds >= 100:
        return f"{seconds:.0f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.1f} ms"


def command_note(script: str, argv: list[str] | None) -> str:
    """The table note naming the command that reproduces it (`argv` None: this process's arguments)."""
    return (
        "Command: `"
        + " ".join([f"python benchmarks/perf/{script}", *(sys.argv[1:] if argv is None else argv)])
        + "`."
    )


def provenance_notes(script: str, argv: list[str] | None, info: dict, info_end: dict) -> list[str]:
    """The table notes every script starts with: the machine (and its load at both ends), the command."""
    return [
        f"Machine: {machine_line(info)} (load average at the end: {info_end['load_average']}).",
        command_note(script, argv),
    ]


def emit_summary(case: str, table: Path, info: dict, info_end: dict) -> dict:
    """The closing JSON line of a script: where its table went and the machine it ran on."""
    return emit(
        {"case": case, "table": str(table), "machine": info, "load_average_end": info_end["load_average"]}
    )
