"""Callbacks a benchmark run adds to the Trainer: efficiency measurement."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch


def _now(module: L.LightningModule) -> float:
    if module.device.type == "cuda":
        torch.cuda.synchronize(module.device)
    return time.perf_counter()


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
        self._batch_start = _now(module)

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        end = _now(module)
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
