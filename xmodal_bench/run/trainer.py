"""The Lightning Trainer of a run: its settings checked up front, its loggers and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig

from xmodal_bench.errors import UserError
from xmodal_bench.metrics.protocols import get_protocol
from xmodal_bench.run.checkpoints import SafeCheckpointIO

_HARDWARE_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "precision")


def _trainer_settings(cfg: DictConfig) -> dict[str, Any]:
    t = cfg.trainer
    return {key: t[key] for key in _HARDWARE_KEYS}


def _refused(cfg: DictConfig, exc: Exception) -> UserError:
    keys = ", ".join(f"trainer.{k}={v}" for k, v in _trainer_settings(cfg).items())
    return UserError(f"trainer settings ({keys}): {str(exc).splitlines()[0]}")


def check_trainer_settings(cfg: DictConfig) -> bool:
    """Let Lightning judge the hardware settings before any data or wandb work; True on global rank 0.

    Builds a bare Trainer (no loggers, no checkpoints): cheap, and it refuses an unknown strategy,
    precision or accelerator, or devices that are not there, with Lightning's own reason. The global
    batch (`data.batch_size`) must split evenly over the devices it finds.
    """
    try:
        probe = L.Trainer(
            **_trainer_settings(cfg),
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
        )
    except (ValueError, TypeError, RuntimeError, MisconfigurationException) as exc:
        raise _refused(cfg, exc) from None
    if cfg.data.batch_size % probe.world_size:
        raise UserError(
            f"data.batch_size={cfg.data.batch_size} is the global batch and cannot be split evenly over "
            f"{probe.world_size} devices; choose a multiple of {probe.world_size}"
        )
    return bool(probe.is_global_zero)


def build_trainer(
    cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback], loggers: list[Any] | None = None
) -> L.Trainer:
    """The Trainer of a run: CSV logs under `run_dir/logs` plus any extra `loggers` (wandb)."""
    t = cfg.trainer
    has_val = cfg.data.val_split is not None
    try:
        return L.Trainer(
            **_trainer_settings(cfg),
            max_epochs=t.max_epochs,
            gradient_clip_val=t.gradient_clip_val,
            log_every_n_steps=t.log_every_n_steps,
            check_val_every_n_epoch=t.check_val_every_n_epoch,
            limit_train_batches=t.limit_train_batches,
            limit_val_batches=None if has_val else 0,
            num_sanity_val_steps=0,
            deterministic=t.deterministic,
            default_root_dir=run_dir,
            logger=[CSVLogger(save_dir=run_dir, name="logs", version=""), *(loggers or [])],
            callbacks=callbacks,
            plugins=[SafeCheckpointIO()],
            enable_model_summary=False,
        )
    except (ValueError, TypeError, MisconfigurationException) as exc:  # Lightning refusing a setting
        raise _refused(cfg, exc) from None


def monitor_for(cfg: DictConfig) -> str:
    """The validation metric that selects the best checkpoint."""
    return f"val/{get_protocol(cfg.data.protocol).selection}"


def checkpoint_callbacks(cfg: DictConfig, checkpoints: Path) -> list[ModelCheckpoint]:
    """`best.ckpt` (by validation, at epoch ends) and `last.ckpt` (epoch ends and every N steps)."""
    has_val = cfg.data.val_split is not None
    callbacks = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            monitor=monitor_for(cfg) if has_val else None,
            mode="max",
            save_last=True,
            enable_version_counter=False,
        )
    ]
    every = cfg.trainer.checkpoint_every_n_steps
    if every > 0:  # only last.ckpt (save_top_k=0): the point to resume from
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                save_top_k=0,
                save_last=True,
                every_n_train_steps=every,
                enable_version_counter=False,
            )
        )
    return callbacks


def learning_rate_monitor() -> LearningRateMonitor:
    """Logs every parameter group's learning rate each step (`lr-<optimizer>/pg<N>` in logs/metrics.csv)."""
    return LearningRateMonitor(logging_interval="step")
