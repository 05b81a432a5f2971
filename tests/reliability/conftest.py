"""Reliability tests run benches in-process: keep wandb off (its own output is not under test)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_wandb(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
