"""Evaluate a method's inference modes on gathered features: metrics and per-query latency.

An *inference mode* is one way a method ranks a gallery: `global` (cosine of global embeddings,
every method has it), and whatever a method adds (`fused` two-stage re-ranking, exhaustive
`local` / `alignment` scoring, ...). Each mode gives exact metrics under the dataset's protocol
and a latency figure: the time to answer a query (top-k over the whole gallery), measured the
same way for every mode so the leaderboard compares like with like.

Modes built here:
- `global_mode()`: cosine of the global embeddings (the metrics package directly).
- `fused_mode(fine_for, k_t2i, k_i2t, lam)`: two-stage (`retrieval.two_stage`): global top-K per
  direction, re-scored by `global + lam * fine`; exact ranks, a positive outside the shortlist
  keeps its global rank.
- `exhaustive_mode(fine_for, name)`: the fine score against the whole gallery; skipped (not
  reported) when the gallery is larger than `max_gallery`.
`fine_for(inputs, direction) -> FineScorer` is the method's fine scorer over the gathered features.
Any rank-producing scorer can reuse the protocol logic through `ranker_metrics(protocol, ...)`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.metrics import (
    caption_metrics_from_ranks,
    caption_retrieval,
    coco_retrieval,
    fold_bounds,
    person_metrics_from_ranks,
    person_retrieval,
    positive_gallery_index,
)
from xmodal_bench.retrieval.two_stage import (
    CosineIndex,
    FineScorer,
    Searcher,
    check_k,
    exhaustive_ranks,
    exhaustive_search,
    two_stage_ranks,
    two_stage_search,
)

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
    # skip(inputs) -> None to evaluate the mode, or the reason it is not evaluated on these inputs
    skip: Callable[[EvalInputs], str | None] | None = None


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
    """{"primary_mode": name, "modes": {name: {"metrics": {...}, "latency_ms": {...}}}, "skipped": {...}}.

    A mode whose `skip(inputs)` gives a reason is left out of "modes" and listed under "skipped".
    """
    report: dict[str, Any] = {"primary_mode": modes[0].name, "modes": {}, "skipped": {}}
    with torch.no_grad():
        for mode in modes:
            reason = mode.skip(inputs) if mode.skip is not None else None
            if reason:
                report["skipped"][mode.name] = reason
                continue
            entry: dict[str, Any] = {"metrics": mode.metrics(method, inputs)}
            if with_latency:
                entry["latency_ms"] = measure_latency(method, inputs, mode, latency_queries, top_k)
            report["modes"][mode.name] = entry
    return report


# ------------------------------------------------------------------ protocols from any ranker

# rank_fn(direction, query_rows, gallery_rows, positive_index) -> ranks [Q, P] (-1 padded): rows
# index the full image / text sets (queries are texts for t2i, images for i2t); positive_index
# holds positions within gallery_rows.
RankFn = Callable[[str, Tensor, Tensor, Tensor], Tensor]


def captions_of_images(owner: Tensor, num_images: int) -> Tensor:
    """[N, P] caption indices of each image (ascending), padded with -1."""
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(int(counts.max()), device=owner.device)
    position = (starts[:, None] + slots).clamp(max=max(0, owner.shape[0] - 1))
    return torch.where(slots < counts[:, None], order[position], -1)


def _caption_metrics(images: Tensor, texts: Tensor, owner: Tensor, rank_fn: RankFn) -> dict[str, float]:
    """Caption protocol on a subset: images / texts are rows of the full sets, owner [len(texts)]
    the position (in `images`) of each caption's image."""
    t2i = rank_fn("t2i", texts, images, owner[:, None])[:, 0]
    own = captions_of_images(owner, images.shape[0])
    i2t = rank_fn("i2t", images, texts, own)
    best = torch.where(own >= 0, i2t, torch.iinfo(torch.int64).max).amin(1)
    return caption_metrics_from_ranks(best, t2i)


def ranker_metrics(protocol: str, images: Features, texts: Features, rank_fn: RankFn) -> dict[str, float]:
    """The protocol's metrics (same keys as `protocol_metrics`) from a function giving exact ranks."""
    device = images["global"].device
    num_images, num_texts = images["global"].shape[0], texts["global"].shape[0]
    all_images = torch.arange(num_images, device=device)
    all_texts = torch.arange(num_texts, device=device)
    owner = texts["image_index"].to(device)
    if protocol == "person":
        positives = positive_gallery_index(texts["pid"].to(device), images["pid"].to(device))
        return person_metrics_from_ranks(rank_fn("t2i", all_texts, all_images, positives))
    if protocol != "coco":
        return _caption_metrics(all_images, all_texts, owner, rank_fn)
    out = {f"5k/{k}": v for k, v in _caption_metrics(all_images, all_texts, owner, rank_fn).items()}
    bounds = fold_bounds(num_images)
    folds = []
    for start, stop in bounds:
        captions = torch.nonzero((owner >= start) & (owner < stop)).squeeze(1)
        folds.append(_caption_metrics(all_images[start:stop], captions, owner[captions] - start, rank_fn))
    out.update({f"1k/{k}": sum(f[k] for f in folds) / len(folds) for k in folds[0]})
    return out


def _sides(inputs: EvalInputs, direction: str) -> tuple[Features, Features]:
    """(query features, gallery features) of a direction."""
    return (inputs.texts, inputs.images) if direction == "t2i" else (inputs.images, inputs.texts)


def restrict_scorer(
    fine: FineScorer, query_rows: Tensor, gallery_rows: Tensor, gallery_size: int
) -> FineScorer:
    """`fine` (rows of the full sets) seen through a subset: rows of `query_rows` / `gallery_rows`."""
    whole = gallery_rows.shape[0] == gallery_size and bool(
        (gallery_rows == torch.arange(gallery_size, device=gallery_rows.device)).all()
    )

    def scorer(rows: Tensor, candidates: Tensor | None) -> Tensor:
        if candidates is not None:
            return fine(query_rows[rows], gallery_rows[candidates])
        scores = fine(query_rows[rows], None)
        return scores if whole else scores[:, gallery_rows]

    return scorer


FineFor = Callable[[EvalInputs, str], FineScorer]
IndexFactory = Callable[[Tensor], Searcher]


def fused_mode(
    fine_for: FineFor,
    k_t2i: int,
    k_i2t: int,
    lam: float = 1.0,
    global_weight: float = 1.0,
    index_factory: IndexFactory | None = None,
    name: str = "fused",
) -> InferenceMode:
    """Two-stage mode: global top-K (K per direction), re-ranked by `global_weight * global + lam * fine`.

    `index_factory(gallery_global [G, D]) -> Searcher` serves stage 1 (None: exact chunked
    cosine). For the metrics the factory is called per direction and per gallery (COCO folds are
    sub-galleries); for latency it is built once per gallery, in the untimed warm-up.
    """
    shortlist = {"t2i": check_k(k_t2i, "k_t2i"), "i2t": check_k(k_i2t, "k_i2t")}
    cache: dict[str, tuple[Tensor, Searcher]] = {}  # per direction: (gallery, its index)

    def metrics(method: Any, inputs: EvalInputs) -> dict[str, float]:
        scorers = {d: fine_for(inputs, d) for d in ("t2i", "i2t")}

        def rank(direction: str, query_rows: Tensor, gallery_rows: Tensor, positives: Tensor) -> Tensor:
            query, gallery = _sides(inputs, direction)
            gallery_emb = gallery["global"][gallery_rows]
            return two_stage_ranks(
                query["global"][query_rows],
                gallery_emb,
                positives,
                restrict_scorer(scorers[direction], query_rows, gallery_rows, gallery["global"].shape[0]),
                shortlist[direction],
                lam=lam,
                global_weight=global_weight,
                index=index_factory(gallery_emb) if index_factory is not None else None,
                chunk_size=inputs.chunk_size,
            )

        return ranker_metrics(inputs.protocol, inputs.images, inputs.texts, rank)

    def search(method: Any, inputs: EvalInputs, direction: str, rows: Tensor, k: int) -> Tensor:
        query, gallery = _sides(inputs, direction)
        built = cache.get(direction)
        if built is None or built[0] is not gallery["global"]:  # keep the gallery alive: ids stay unique
            built = (gallery["global"], (index_factory or CosineIndex)(gallery["global"]))
            cache[direction] = built
        _, found = two_stage_search(
            query["global"][rows],
            rows,
            built[1],
            fine_for(inputs, direction),
            shortlist[direction],
            lam=lam,
            global_weight=global_weight,
            top=k,
        )
        return found

    return InferenceMode(name, metrics, search)


#: Largest image x caption matrix (entries) the exhaustive mode keeps whole to rank both directions.
_SHARED_MATRIX_LIMIT = 64 * 2**20


def _matrix_scorer(matrix: Tensor) -> FineScorer:
    """A `FineScorer` reading a precomputed [queries, gallery] matrix."""

    def scorer(rows: Tensor, candidates: Tensor | None) -> Tensor:
        return matrix[rows] if candidates is None else matrix[rows[:, None], candidates]

    return scorer


def exhaustive_mode(fine_for: FineFor, name: str = "local", max_gallery: int | None = None) -> InferenceMode:
    """The fine score against every gallery item (no shortlist); skipped when either gallery
    (images for t2i, captions for i2t) has more than `max_gallery` items."""

    def skip(inputs: EvalInputs) -> str | None:
        size = max(inputs.images["global"].shape[0], inputs.texts["global"].shape[0])
        if max_gallery is not None and size > max_gallery:
            return f"gallery of {size} items is larger than the limit {max_gallery}"
        return None

    def metrics(method: Any, inputs: EvalInputs) -> dict[str, float]:
        scorers = {d: fine_for(inputs, d) for d in ("t2i", "i2t")}
        num_images, num_texts = inputs.images["global"].shape[0], inputs.texts["global"].shape[0]
        if num_images * num_texts <= _SHARED_MATRIX_LIMIT:  # score every pair once, rank both directions
            rows = torch.arange(num_texts, device=inputs.texts["global"].device)
            full = torch.cat([scorers["t2i"](chunk, None) for chunk in rows.split(256)])
            scorers = {"t2i": _matrix_scorer(full), "i2t": _matrix_scorer(full.T)}

        def rank(direction: str, query_rows: Tensor, gallery_rows: Tensor, positives: Tensor) -> Tensor:
            gallery = _sides(inputs, direction)[1]
            fine = restrict_scorer(scorers[direction], query_rows, gallery_rows, gallery["global"].shape[0])
            return exhaustive_ranks(positives, fine)

        return ranker_metrics(inputs.protocol, inputs.images, inputs.texts, rank)

    def search(method: Any, inputs: EvalInputs, direction: str, rows: Tensor, k: int) -> Tensor:
        return exhaustive_search(rows, fine_for(inputs, direction), k)[1]

    return InferenceMode(name, metrics, search, skip=skip)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
