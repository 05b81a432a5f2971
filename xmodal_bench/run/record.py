"""The results record of a tested method (`results.json`, see `report.results`); bench and eval share it."""

from __future__ import annotations

import resource
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from omegaconf import DictConfig

from xmodal_bench.backbones import count_parameters
from xmodal_bench.config import to_dict
from xmodal_bench.report.results import RESULTS_SCHEMA, git_sha, hardware, versions
from xmodal_bench.run.folders import config_id, run_id_for


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"


def results_record(
    cfg: DictConfig,
    method: Any,
    trainer: L.Trainer,
    *,
    started: float,
    efficiency: dict[str, Any],
    training: dict[str, Any],
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of the method's last test evaluation (`method.eval_results["test"]`)."""
    report = method.eval_results["test"]
    memory, memory_kind = peak_memory_mb(method.device)
    primary = report["primary_mode"]
    return {
        "schema": RESULTS_SCHEMA,
        "method": cfg.method,
        "dataset": cfg.data.name,
        "protocol": cfg.data.protocol,
        "scale": cfg.scale,
        "seed": cfg.seed,
        "run_id": run_id_for(cfg),
        "config_id": config_id(cfg),
        "changes": list(cfg.changes),
        "primary_mode": primary,
        "metrics": report["modes"][primary]["metrics"],
        "modes": report["modes"],
        "notes": report.get("notes", []),  # metrics left out, and why (e.g. ECCV Caption without ids)
        "efficiency": {
            **efficiency,
            **report["encode"],
            "latency_ms": report["modes"][primary].get("latency_ms", {}),
            "params_m": count_parameters(method) / 1e6,
            "peak_memory_mb": memory,
            "peak_memory_kind": memory_kind,
            "devices": trainer.world_size,
        },
        "training": training,
        "data": data or {"on_error": cfg.data.get("on_error", "error"), "train_samples_skipped": 0},
        "environment": {
            "versions": versions(),
            "git_sha": git_sha(Path(__file__).parent),
            "hardware": hardware(),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "config": to_dict(cfg),
    }
