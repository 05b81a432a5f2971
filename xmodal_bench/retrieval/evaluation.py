"""Evaluate a method's inference modes on gathered features: metrics and per-query latency.

An *inference mode* is one way a method ranks a gallery: `global` (cosine of global embeddings,
every method has it), and whatever a method adds (`fused` two-stage re-ranking, exhaustive
`local` / `alignment` scoring, ...). Each mode gives exact metrics under the dataset's protocol
and a latency figure: the time to answer a query (top-k over the whole gallery), measured the
same way for every mode so the leaderboard compares like with like.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.metrics import caption_retrieval, coco_retrieval, person_retrieval

Features = dict[str, Tensor]


@dataclass(frozen=True)
class EvalInputs:
    """Everything gathered for one split: image rows are in image-index order, text rows in caption order."""

    images: Features  # at least `global`, `pid`
    texts: Features  # at least `global`, `pid`, `image_index`
    protocol: str  # caption | coco | person
    chunk_size: int | None = None


# metrics(method, inputs) -> {name: value}; search(method, inputs, direction, query_rows, k) -> [Q, k] gallery rows
MetricsFn = Callable[[Any, EvalInputs], dict[str, float]]
SearchFn = Callable[[Any, EvalInputs, str, Tensor, int], Tensor]


@dataclass(frozen=True)
class InferenceMode:
    name: str
    metrics: MetricsFn
    search: SearchFn
    directions: tuple[str, ...] = ("t2i", "i2t")


def protocol_metrics(
    protocol: str,
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    image_pids: Tensor,
    text_pids: Tensor,
    chunk_size: int | None = None,
) -> dict[str, float]:
    """The protocol's metrics for embedding similarity (dot product of normalised embeddings)."""
    if protocol == "person":
        return person_retrieval(text_emb, image_emb, text_pids, image_pids, chunk_size=chunk_size)
    if protocol == "coco":
        return coco_retrieval(image_emb, text_emb, text_to_image, chunk_size=chunk_size)
    return caption_retrieval(image_emb, text_emb, text_to_image, chunk_size=chunk_size)


def _global_metrics(method: Any, inputs: EvalInputs) -> dict[str, float]:
    return protocol_metrics(
        inputs.protocol,
        inputs.images["global"],
        inputs.texts["global"],
        inputs.texts["image_index"],
        inputs.images["pid"],
        inputs.texts["pid"],
        inputs.chunk_size,
    )


def top_k_by_dot(queries: Tensor, gallery: Tensor, k: int, chunk: int = 1024) -> Tensor:
    """Indices [Q, k] of the k highest dot products of each query over the gallery."""
    k = min(k, gallery.shape[0])
    return torch.cat([(q @ gallery.T).topk(k, dim=1).indices for q in queries.split(chunk)])


def _global_search(method: Any, inputs: EvalInputs, direction: str, rows: Tensor, k: int) -> Tensor:
    if direction == "t2i":
        return top_k_by_dot(inputs.texts["global"][rows], inputs.images["global"], k)
    return top_k_by_dot(inputs.images["global"][rows], inputs.texts["global"], k)


def global_mode() -> InferenceMode:
    """Rank by cosine of the global embeddings: the mode every method has."""
    return InferenceMode("global", _global_metrics, _global_search)


def measure_latency(
    method: Any, inputs: EvalInputs, mode: InferenceMode, queries: int, k: int
) -> dict[str, float]:
    """Milliseconds per query to return the top-k of the whole gallery, per direction.

    Query features are precomputed (encoding cost is reported separately as images/s, texts/s);
    what is timed is the mode's search, over up to `queries` evenly spaced queries.
    """
    latency = {}
    for direction in mode.directions:
        n = inputs.texts["global"].shape[0] if direction == "t2i" else inputs.images["global"].shape[0]
        rows = torch.linspace(0, n - 1, steps=min(queries, n)).round().long().unique()
        device = inputs.images["global"].device
        mode.search(method, inputs, direction, rows[:2].to(device), k)  # warm-up
        start = _now(device)
        mode.search(method, inputs, direction, rows.to(device), k)
        latency[f"{direction}_ms"] = 1000.0 * (_now(device) - start) / len(rows)
    return latency


def evaluate_modes(
    method: Any,
    inputs: EvalInputs,
    modes: list[InferenceMode],
    with_latency: bool = True,
    latency_queries: int = 1000,
    top_k: int = 10,
) -> dict[str, Any]:
    """{"primary_mode": name, "modes": {name: {"metrics": {...}, "latency_ms": {...}}}}."""
    report: dict[str, Any] = {"primary_mode": modes[0].name, "modes": {}}
    with torch.no_grad():
        for mode in modes:
            entry: dict[str, Any] = {"metrics": mode.metrics(method, inputs)}
            if with_latency:
                entry["latency_ms"] = measure_latency(method, inputs, mode, latency_queries, top_k)
            report["modes"][mode.name] = entry
    return report


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
