"""Evaluate a method's inference modes on gathered features: metrics and per-query latency.

An *inference mode* is one way a method ranks a gallery: `global` (cosine of global embeddings,
every method has it), and whatever a method adds (`fused` two-stage re-ranking, exhaustive
`local` / `alignment` scoring, ...). Each mode gives the exact per-query ranks of the dataset's
protocol (`metrics.protocols`), hence its metrics, and a latency figure: the time to answer a
query (top-k over the whole gallery), measured the same way for every mode so the leaderboard
compares like with like.

Modes built here:
- `global_mode()`: cosine of the global embeddings (the metrics package directly).
- `fused_mode(fine_for, k_t2i, k_i2t, lam)`: two-stage (`retrieval.two_stage`): global top-K per
  direction, re-scored by `global + lam * fine`; exact ranks, a positive outside the shortlist
  keeps its global rank.
- `exhaustive_mode(fine_for, name)`: the fine score against the whole gallery; skipped (not
  reported) when the gallery is larger than `max_gallery`.
`fine_for(inputs, direction) -> FineScorer` is the method's fine scorer over the gathered features.
Any rank-producing scorer reuses the protocol logic through `Protocol.ranks_from(gallery, rank_fn)`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.metrics import Gallery, Ranks, get_protocol
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
from xmodal_bench.timing import synchronized_time

Features = dict[str, Tensor]


@dataclass(frozen=True)
class EvalInputs:
    """Everything gathered for one split: image rows are in image-index order, text rows in caption order."""

    images: Features  # at least `global`, `pid`
    texts: Features  # at least `global`, `pid`, `image_index`
    protocol: str  # a registered protocol: caption | coco | person
    chunk_size: int | None = None
    # (image ids [N], caption ids [M]): the dataset's own ids, for id metrics (COCO: ECCV, CxC)
    ids: tuple[Any, Any] | None = None

    def gallery(self, with_embeddings: bool = True) -> Gallery:
        """The protocol's view of these inputs (global embeddings, owners, person ids, dataset ids)."""
        return Gallery(
            text_to_image=self.texts["image_index"],
            image_emb=self.images["global"] if with_embeddings else None,
            text_emb=self.texts["global"] if with_embeddings else None,
            image_pids=self.images["pid"],
            text_pids=self.texts["pid"],
            chunk_size=self.chunk_size,
            image_ids=self.ids[0] if self.ids is not None else None,
            caption_ids=self.ids[1] if self.ids is not None else None,
        )


# ranks(method, inputs) -> the protocol's per-query ranks; search(method, inputs, direction,
# query_rows, k) -> [Q, k] gallery rows
RanksFn = Callable[[Any, EvalInputs], Ranks]
SearchFn = Callable[[Any, EvalInputs, str, Tensor, int], Tensor]


@dataclass(frozen=True)
class InferenceMode:
    name: str
    ranks: RanksFn
    search: SearchFn
    directions: tuple[str, ...] = ("t2i", "i2t")
    # skip(inputs) -> None to evaluate the mode, or the reason it is not evaluated on these inputs
    skip: Callable[[EvalInputs], str | None] | None = None
    # True: the mode ranks by the global embeddings, so id metrics use their exact top-K
    by_embeddings: bool = False

    def metrics(self, method: Any, inputs: EvalInputs) -> dict[str, float]:
        """The protocol's metrics of this mode's ranks."""
        return get_protocol(inputs.protocol).metrics(self.ranks(method, inputs))


def embedding_ranks(inputs: EvalInputs) -> Ranks:
    """The protocol's exact ranks by cosine of the global embeddings."""
    return get_protocol(inputs.protocol).ranks(inputs.gallery())


def _global_ranks(method: Any, inputs: EvalInputs) -> Ranks:
    return embedding_ranks(inputs)


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
    return InferenceMode("global", _global_ranks, _global_search, by_embeddings=True)


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
        start = synchronized_time(device)
        mode.search(method, inputs, direction, rows.to(device), k)
        latency[f"{direction}_ms"] = 1000.0 * (synchronized_time(device) - start) / len(rows)
    return latency


def evaluate_modes(
    method: Any,
    inputs: EvalInputs,
    modes: list[InferenceMode],
    with_latency: bool = True,
    latency_queries: int = 1000,
    top_k: int = 10,
) -> dict[str, Any]:
    """{"primary_mode": name, "modes": {name: {"metrics", "latency_ms"}}, "skipped": {...}, "ranks": {name: Ranks}}.

    A mode whose `skip(inputs)` gives a reason is left out of "modes" and listed under "skipped".
    "ranks" holds each mode's per-query ranks (tensors; `report.ranks` saves them beside the results),
    and the per-query values of its id metrics.
    Protocols with id metrics (COCO: ECCV Caption, CxC) add them to every mode's metrics, from
    `inputs.ids` or else the method's datamodule (`split_ids` of the test split); when they are
    left out, the reason is one warning and one line of "notes".
    """
    protocol = get_protocol(inputs.protocol)
    report: dict[str, Any] = {
        "primary_mode": modes[0].name,
        "modes": {},
        "skipped": {},
        "ranks": {},
        "notes": [],
    }
    if protocol.id_metric_info and inputs.ids is None:
        inputs = replace(inputs, ids=datamodule_ids(method))
    with torch.no_grad():
        for mode in modes:
            reason = mode.skip(inputs) if mode.skip is not None else None
            if reason:
                report["skipped"][mode.name] = reason
                continue
            ranks = mode.ranks(method, inputs)
            entry: dict[str, Any] = {"metrics": protocol.metrics(ranks)}
            if protocol.id_metric_info:
                found = protocol.id_metrics(
                    inputs.gallery(), None if mode.by_embeddings else _top_k(method, inputs, mode)
                )
                entry["metrics"].update(found.metrics)
                ranks = {**ranks, **found.per_query}  # saved with the ranks: the bootstrap covers them
                if found.note and found.note not in report["notes"]:
                    warnings.warn(found.note, stacklevel=2)
                    report["notes"].append(found.note)
            if with_latency:
                entry["latency_ms"] = measure_latency(method, inputs, mode, latency_queries, top_k)
            report["modes"][mode.name] = entry
            report["ranks"][mode.name] = {key: value.cpu() for key, value in ranks.items()}
    return report


def datamodule_ids(method: Any) -> tuple[Any, Any] | None:
    """(image ids, caption ids) of the test split from the method's datamodule, when it has them."""
    try:
        datamodule = method.trainer.datamodule
        split = method.cfg.data.test_split
    except (AttributeError, RuntimeError):  # not attached to a trainer (a bare evaluation)
        return None
    split_ids = getattr(datamodule, "split_ids", None)
    return split_ids(split) if split_ids is not None else None


def _top_k(method: Any, inputs: EvalInputs, mode: InferenceMode) -> Callable[[str, Tensor, int], Tensor]:
    """The mode's own search as a `TopK` (gallery rows of each query's top k)."""

    def top_k(direction: str, rows: Tensor, k: int) -> Tensor:
        return mode.search(method, inputs, direction, rows, k)

    return top_k


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

    def ranks(method: Any, inputs: EvalInputs) -> Ranks:
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

        return get_protocol(inputs.protocol).ranks_from(inputs.gallery(with_embeddings=False), rank)

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

    return InferenceMode(name, ranks, search)


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

    def ranks(method: Any, inputs: EvalInputs) -> Ranks:
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

        return get_protocol(inputs.protocol).ranks_from(inputs.gallery(with_embeddings=False), rank)

    def search(method: Any, inputs: EvalInputs, direction: str, rows: Tensor, k: int) -> Tensor:
        return exhaustive_search(rows, fine_for(inputs, direction), k)[1]

    return InferenceMode(name, ranks, search, skip=skip)
