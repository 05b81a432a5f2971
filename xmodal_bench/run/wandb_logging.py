"""Weights & Biases logging for benchmark runs: optional, offline by default, never fatal.

One wandb run per benchmark run, laid out so the wandb UI compares methods with no setup:

- `group` = dataset, `job_type` = method, `name` = `{method}/{dataset}/{run_id}`;
- tags: method (and each part of a spec like `clip+bcls`), dataset, protocol, scale, `seed{N}`,
  `config:{config_id}` and the run's `changes` (wandb limits tags to 64 characters);
- `config` = the resolved run config;
- history: everything the LightningModule logs (`train/<loss>` per loss term, `train/loss`,
  `val/<metric>`, `test/<metric>`), through Lightning's `WandbLogger`;
- summary: the final record under the same names as `results.json`, flattened with `/`
  (`metrics/rsum`, `modes/fused/metrics/r1`, `efficiency/latency_ms/t2i_ms`, `training/steps`).

`WANDB_MODE` decides where runs go; when it is unset it is set to `offline` (runs are written under
the run folder, or `WANDB_DIR`, and can be uploaded later with `wandb sync`). `WANDB_MODE=disabled`
turns wandb off entirely. A missing package or a failing `wandb.init` logs a warning and the run
goes on with its CSV logs only; so does any later wandb error (the logger then stops logging).
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig

from xmodal_bench.config import to_dict

log = logging.getLogger(__name__)

MAX_TAG = 64


def wandb_enabled() -> bool:
    return os.environ.get("WANDB_MODE", "offline").lower() != "disabled"


def _warn(what: str, exc: BaseException) -> None:
    message = f"wandb {what} failed ({type(exc).__name__}: {exc}); continuing without wandb"
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log.warning(message)


class SafeWandbLogger(WandbLogger):
    """`WandbLogger` whose failures are warnings: after the first one it stops logging."""

    broken = False

    def _guard(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        if self.broken:
            return None
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            self.broken = True
            _warn(what, exc)
            return None

    def log_metrics(self, metrics: Any, step: int | None = None) -> None:
        self._guard("log_metrics", super().log_metrics, metrics, step)

    def log_hyperparams(self, params: Any) -> None:
        self._guard("log_hyperparams", super().log_hyperparams, params)

    def after_save_checkpoint(self, checkpoint_callback: Any) -> None:
        self._guard("after_save_checkpoint", super().after_save_checkpoint, checkpoint_callback)

    def finalize(self, status: str) -> None:
        self._guard("finalize", super().finalize, status)


def run_tags(cfg: DictConfig, config_id: str) -> list[str]:
    parts = str(cfg.method).split("+")
    tags = [str(cfg.method), *parts[1:], cfg.data.name, cfg.data.protocol, cfg.scale, f"seed{cfg.seed}"]
    tags += [f"config:{config_id}", *map(str, cfg.changes)]
    return [t for t in dict.fromkeys(tags) if 0 < len(t) <= MAX_TAG]


def build_wandb_logger(cfg: DictConfig, run_dir: Path, run_id: str, config_id: str) -> SafeWandbLogger | None:
    """A started wandb logger for this run, or None when wandb is disabled, missing or failing.

    The wandb run is started here (not lazily at the first log call) so that a failing init is
    caught before training. Ranks other than 0 get Lightning's dummy experiment.
    """
    if not wandb_enabled():
        return None
    os.environ.setdefault("WANDB_MODE", "offline")
    try:
        import wandb

        save_dir = Path(os.environ.get("WANDB_DIR") or run_dir)
        save_dir.mkdir(parents=True, exist_ok=True)
        logger = SafeWandbLogger(
            name=f"{cfg.method}/{cfg.data.name}/{run_id}",
            save_dir=str(save_dir),
            project=os.environ.get("WANDB_PROJECT", "xmodal-bench"),
            group=cfg.data.name,
            job_type=str(cfg.method),
            tags=run_tags(cfg, config_id),
            config=to_dict(cfg),
            settings=wandb.Settings(console="off", quiet=True),
        )
        logger.experiment  # noqa: B018  (starts the run now; a failure is caught below)
    except Exception as exc:
        _warn("init", exc)
        _finish_quietly()
        return None
    return logger


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a/b": 1}; keeps numbers, strings and booleans (None and lists dropped)."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}/"))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
    return out


def finish_wandb(logger: SafeWandbLogger | None, record: dict[str, Any] | None) -> dict[str, Any] | None:
    """Write the final record to the run summary and close the run (rank 0). Returns where it went."""
    if logger is None or logger.broken:
        _finish_quietly()
        return None
    try:
        run = logger.experiment
        if record is not None:
            keys = ("metrics", "modes", "efficiency", "training")
            run.summary.update(flatten({k: record[k] for k in keys if k in record}))
        info = {
            "id": run.id,
            "mode": os.environ.get("WANDB_MODE", "offline"),
            "dir": str(Path(run.dir).parent) if getattr(run, "dir", None) else None,
            "url": getattr(run, "url", None),
        }
        run.finish()
        return info
    except Exception as exc:
        _warn("finish", exc)
        _finish_quietly()
        return None


def _finish_quietly() -> None:
    """Close any wandb run this process left open, so the next run in it starts a new one."""
    try:
        import wandb

        if wandb.run is not None:
            wandb.finish()
    except Exception:  # wandb missing or broken: nothing to close
        pass
