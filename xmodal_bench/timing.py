"""Wall-clock timing that waits for the GPU: the one timer every measurement in the suite uses."""

from __future__ import annotations

import time

import torch


def synchronized_time(device: torch.device | str) -> float:
    """`time.perf_counter()` after every queued kernel on `device` has finished (CUDA is asynchronous)."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
