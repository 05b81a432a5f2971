"""The results record of one run (`results.json`): its schema, reading it back, finding them all.

One file per (method, dataset, scale, seed) run, self-describing: what ran (method, dataset,
protocol, resolved config), what it scored (every inference mode, the primary one repeated as
`metrics`), what it cost (efficiency) and where (versions, git sha, hardware).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

RESULTS_SCHEMA = 1
RESULTS_FILE = "results.json"


def git_sha(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in ("torch", "lightning", "torchmetrics", "open_clip_torch", "webdataset", "xmodal-bench"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return found


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def read_results(path: Path) -> dict[str, Any] | None:
    """A results file, or None when it is missing, half-written, of another schema or malformed
    (so one damaged file never stops a leaderboard rebuild, a sweep or a later bench)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if well_formed(data) else None


def well_formed(data: Any) -> bool:
    """The fields every reader of a results record relies on are there, with the right types."""
    if not isinstance(data, dict) or data.get("schema") != RESULTS_SCHEMA:
        return False
    strings = ("method", "dataset", "protocol", "scale", "primary_mode")
    if not all(isinstance(data.get(key), str) for key in strings) or not isinstance(data.get("seed"), int):
        return False
    modes = data.get("modes")
    if (
        not isinstance(modes, dict)
        or data["primary_mode"] not in modes
        or not isinstance(data.get("metrics"), dict)
    ):
        return False
    for entry in modes.values():
        if not isinstance(entry, dict) or not isinstance(entry.get("metrics"), dict):
            return False
        if not all(isinstance(v, (int, float)) for v in entry["metrics"].values()):
            return False
    changes = data.get("changes", [])
    return isinstance(data.get("efficiency", {}), dict) and isinstance(changes, list)


def find_results(runs_dir: Path) -> list[dict[str, Any]]:
    """Every valid results record under `runs_dir` (layout `{dataset}/{method}/{run_id}/results.json`)."""
    records = []
    for path in sorted(runs_dir.glob(f"*/*/*/{RESULTS_FILE}")):
        record = read_results(path)
        if record is not None:
            record["_path"] = str(path)
            records.append(record)
    return records
