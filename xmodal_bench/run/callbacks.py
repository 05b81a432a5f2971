"""Callbacks a benchmark run adds to the Trainer: efficiency measurement, the non-finite loss guard,
and the count of corrupt training samples skipped (`data.on_error=skip`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch

from xmodal_bench.errors import UserError
from xmodal_bench.timing import synchronized_time


class EfficiencyMonitor(L.Callback):
    """Training throughput: samples per second over all ranks, skipping the first steps of each epoch.

    Two figures: `train_samples_per_s` from batch end to batch end (what a user waits for: data
    loading included) and `train_step_samples_per_s` from batch start to end (model compute only).
    """

    def __init__(self, skip_steps: int = 3) -> None:
        self.skip_steps = skip_steps
        self.samples = 0
        self.seconds = 0.0
        self.step_samples = 0
        self.step_seconds = 0.0
        self._epoch_step = 0
        self._last_end: float | None = None
        self._batch_start = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._epoch_step = 0
        self._last_end = None

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_start = synchronized_time(module.device)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        end = synchronized_time(module.device)
        size = int(batch["image"].shape[0]) * trainer.world_size
        self._epoch_step += 1
        if self._epoch_step > self.skip_steps:
            self.step_samples += size
            self.step_seconds += end - self._batch_start
            if self._last_end is not None:
                self.samples += size
                self.seconds += end - self._last_end
        self._last_end = end

    def summary(self) -> dict[str, float | None]:
        return {
            "train_samples_per_s": self.samples / self.seconds if self.seconds else None,
            "train_step_samples_per_s": self.step_samples / self.step_seconds if self.step_seconds else None,
        }


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; the run stops without writing results."""


class NonFiniteLossGuard(L.Callback):
    """Stop training at the first NaN / Inf loss, before its backward pass and optimizer step.

    The check runs in `on_before_backward`, so the weights (and every checkpoint written after this
    point) never see the bad step; Lightning writes no checkpoint when `fit` ends in an exception,
    so the last checkpoint on disk is the last good one. Under DDP the ranks agree (any rank's bad
    loss stops all of them), so no rank is left waiting in a collective. The error names the step,
    the logged loss terms of that step and the last good checkpoint.
    """

    def __init__(self) -> None:
        self._saved: tuple[str, int] | None = None  # (checkpoint path, global step)
        self._batch_idx = 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if trainer.ckpt_path:  # resumed: the checkpoint it came from is good
            self._saved = (str(trainer.ckpt_path), int(trainer.global_step))

    def on_train_batch_start(
        self, trainer: L.Trainer, module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_idx = batch_idx

    def on_save_checkpoint(self, trainer: L.Trainer, module: L.LightningModule, checkpoint: dict) -> None:
        paths = [cb.last_model_path or cb.best_model_path for cb in trainer.checkpoint_callbacks]
        last = next((p for p in paths if p and Path(p).name == "last.ckpt"), None)
        self._saved = (last or next((p for p in paths if p), "?"), int(trainer.global_step))

    def on_before_backward(self, trainer: L.Trainer, module: L.LightningModule, loss: torch.Tensor) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if not trainer.strategy.reduce_boolean_decision(bad, all=False):
            return
        raise NonFiniteLossError(self.describe(trainer, loss))

    def describe(self, trainer: L.Trainer, loss: torch.Tensor) -> str:
        value = float(loss.detach().float().mean()) if loss.numel() else math.nan
        terms = {
            key.removeprefix("train/"): float(v)
            for key, v in trainer.callback_metrics.items()
            if key.startswith("train/") and key != "train/loss" and torch.is_tensor(v) and v.numel() == 1
        }
        listed = ", ".join(f"{k}={v:.4g}" for k, v in sorted(terms.items())) or "none logged"
        if self._saved is None:
            checkpoint = "no checkpoint was written yet"
        else:
            # the last.ckpt path is overwritten after the step it records; name the step with it
            checkpoint = f"last good checkpoint: {self._saved[0]} (step {self._saved[1]})"
        return (
            f"non-finite training loss ({value}) at step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {self._batch_idx}); loss terms: {listed}; {checkpoint}; training stopped, no results "
            "written (lower optim.lr, set trainer.gradient_clip_val, or check the data)"
        )


class SkippedSamples(L.Callback):
    """Counts the corrupt training samples the DataModule skipped (`data.on_error=skip`), over all ranks.

    `count` is the number of image-caption training samples skipped per epoch (the same samples
    are skipped every epoch; the largest epoch count is kept).
    """

    def __init__(self) -> None:
        self.count = 0

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        datamodule = getattr(trainer, "datamodule", None)
        local = datamodule.skipped_train_samples() if hasattr(datamodule, "skipped_train_samples") else 0
        total = trainer.strategy.reduce(torch.tensor(float(local), device=module.device), reduce_op="sum")
        self.count = max(self.count, round(float(total)))
