"""Coarse-grained CPU parallelism for the chunked metrics: whole tiles per thread, not per op.

torch parallelises each elementwise op over its intra-op threads; on cache-sized tiles every op
is then a short parallel region whose barrier waits for the slowest thread. When the cores are
shared (data-loader workers during validation, other jobs) a descheduled thread stalls every op:
measured in benchmarks/perf at 5-10x the single-threaded time. Running whole tiles on separate
Python threads (torch releases the GIL inside ops) with one intra-op thread each has no barrier
until the end, and is as fast when the machine is quiet.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TypeVar

import torch

State = TypeVar("State")
_LOCK = threading.Lock()  # set_num_threads is process-wide: one metric call changes it at a time


def cpu_workers(device: torch.device) -> int:
    """How many tile workers to use on `device`: torch's intra-op thread count on CPU, else 1."""
    return max(1, torch.get_num_threads()) if device.type == "cpu" else 1


@contextmanager
def one_intra_op_thread(active: bool) -> Iterator[None]:
    """While active, torch ops run single-threaded (restored afterwards)."""
    if not active:
        yield
        return
    with _LOCK:
        previous = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(previous)


def run_tasks(tasks: Iterable[int], work: Callable[[int, State], None], states: Sequence[State]) -> None:
    """Run `work(task, state)` for every task, one `state` per thread, tasks handed out in order.

    With one state it runs inline. Each thread only touches its own state and whatever its tasks
    own, so no locking is needed beyond handing out the next task.
    """
    if len(states) == 1:
        for task in tasks:
            work(task, states[0])
        return
    pending = iter(tasks)
    take = threading.Lock()
    # autograd modes are thread-local: the pool's threads must run under the caller's (Lightning's
    # test loop runs under inference mode, and its tensors can only be written under it)
    inference, grad = torch.is_inference_mode_enabled(), torch.is_grad_enabled()

    def loop(state: State) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):
            while True:
                with take:
                    task = next(pending, None)
                if task is None:
                    return
                work(task, state)

    with ThreadPoolExecutor(len(states)) as pool:
        for future in [pool.submit(loop, state) for state in states]:
            future.result()
