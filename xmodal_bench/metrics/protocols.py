"""Evaluation protocols: one registered object per protocol, the only place that knows its metrics.

A protocol says how a split is scored: which queries and galleries, what a hit is, and what is
reported. Everything goes through per-query **ranks** (0-based, exact, ties broken by index):

    protocol = get_protocol("coco")
    ranks = protocol.ranks(gallery)             # {"5k/i2t": [N], "5k/t2i": [M], "1k/i2t": ..., ...}
    metrics = protocol.metrics(ranks)           # {"5k/rsum": ..., "1k/i2t_r1": ...}
    ranks = protocol.ranks_from(gallery, rank_fn)   # the same, from any exact ranker (two-stage, ...)

so the metrics of a run, of `xmodal-bench score`, of a two-stage re-ranker and of a bootstrap
resample of the queries are one function of the ranks. A protocol may also define *id metrics*,
which need the dataset's own image and caption ids and the retrieved lists rather than ranks
(COCO: ECCV Caption and CxC, `metrics.eccv`):

    found = protocol.id_metrics(gallery, top_k)   # .metrics, .per_query, .note ("why not")

An id metric that is a mean over queries also gives each query row its value (`per_query`);
kept beside the ranks, `metrics(ranks)` computes the id metrics from them too, so a bootstrap
resample of the queries covers them like the rank metrics. Besides the metric functions a protocol
carries what the rest of the suite needs to know about it: metric metadata (title,
higher-is-better, leaderboard column), the headline metric, the validation metric that selects
the best checkpoint, and the protocol validation runs with. Adding a metric or a protocol touches
this file only.

Registered: `caption` (Flickr30K, synth: both directions, 5 captions per image), `coco` (5K and
the mean of five 1K folds), `coco1k` and `coco5k` (one of the two, unprefixed; for `score`), and
`person` (CUHK-PEDES, ICFG-PEDES, RSTPReid, synth_reid: text queries, image gallery, hit = same
person id).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from xmodal_bench.errors import UserError
from xmodal_bench.metrics._checks import check_embeddings, check_owner_index
from xmodal_bench.metrics.caption import caption_metrics_from_ranks, caption_ranks
from xmodal_bench.metrics.chunking import resolve_score_dtype
from xmodal_bench.metrics.eccv import (
    ECCV_METRIC_NAMES,
    eccv_cxc_metrics,
    embedding_top_k,
    ids_problem,
    metrics_from_values,
)
from xmodal_bench.metrics.person import person_metrics_from_ranks, person_ranks, positive_gallery_index

# per-query ranks by name ("5k/t2i": [M]); beside them, per-query values of id metrics ("eccv/...")
Ranks = dict[str, Tensor]
# rank_fn(direction, query_rows, gallery_rows, positive_index) -> ranks [Q, P] (-1 padded): rows index
# the full image / text sets (queries are texts for t2i, images for i2t); positive_index [Q, P]
# holds positions within gallery_rows (-1 padded).
RankFn = Callable[[str, Tensor, Tensor, Tensor], Tensor]
# top_k(direction, query_rows, k) -> [Q, k] gallery rows, best first (see `metrics.eccv`)
TopK = Callable[[str, Tensor, int], Tensor]


@dataclass(frozen=True)
class Gallery:
    """What a protocol scores: embeddings (for `ranks`) and the labels that define positives.

    Image rows are in image-index order, text rows in caption-index order.
    """

    text_to_image: Tensor  # [M] image index of each caption
    image_emb: Tensor | None = None  # [N, D], L2-normalised (score = dot product)
    text_emb: Tensor | None = None  # [M, D]
    image_pids: Tensor | None = None  # [N] person ids (person protocol)
    text_pids: Tensor | None = None  # [M]
    chunk_size: int | None = None
    score_dtype: torch.dtype | str = torch.float32
    image_ids: Any = None  # [N] the dataset's own ids of the images (id metrics), or None
    caption_ids: Any = None  # [M] ... of the captions

    @property
    def num_images(self) -> int:
        if self.image_emb is not None:
            return int(self.image_emb.shape[0])
        if self.image_pids is not None:
            return int(self.image_pids.shape[0])
        return int(self.text_to_image.max()) + 1

    def embeddings(self) -> tuple[Tensor, Tensor]:
        if self.image_emb is None or self.text_emb is None:
            raise ValueError("this gallery holds no embeddings: rank it with ranks_from(gallery, rank_fn)")
        return self.image_emb, self.text_emb


@dataclass(frozen=True)
class IdMetrics:
    """What a protocol's id metrics give: the metrics, each query row's values, or why not."""

    metrics: dict[str, float] = field(default_factory=dict)
    per_query: Ranks = field(default_factory=dict)  # name -> [query rows] values (NaN: not its query)
    note: str | None = None  # why they are left out (then both dicts are empty)


@dataclass(frozen=True)
class MetricInfo:
    key: str
    title: str
    higher_is_better: bool = True
    column: bool = True  # shown on the leaderboard
    digits: int = 2


@dataclass(frozen=True)
class Protocol:
    name: str
    summary: str
    positives: str  # "image": a caption's own image; "pid": every image of the same person
    metric_info: tuple[MetricInfo, ...]
    headline: str  # the one accuracy figure (plots, index, sweep summaries)
    selection: str  # validation metric that picks the best checkpoint
    validation: str  # protocol the validation split is scored with
    _ranks: Callable[[Gallery], Ranks] = field(repr=False)
    _ranks_from: Callable[[Gallery, RankFn], Ranks] = field(repr=False)
    _metrics: Callable[[Ranks], dict[str, float]] = field(repr=False)
    # metrics of the dataset's ids and retrieved lists (not of ranks): shown beside the others
    id_metric_info: tuple[MetricInfo, ...] = ()
    id_metrics_name: str = "id metrics"
    _id_metrics: Callable[[Gallery, TopK | None], IdMetrics] | None = field(default=None, repr=False)
    # the id metrics from saved per-query values (those present), for resamples of the queries
    _id_metrics_from: Callable[[Ranks], dict[str, float]] | None = field(default=None, repr=False)

    def ranks(self, gallery: Gallery) -> Ranks:
        """Exact per-query ranks by dot product of the gallery's embeddings."""
        return self._ranks(gallery)

    def ranks_from(self, gallery: Gallery, rank_fn: RankFn) -> Ranks:
        """The same ranks from any exact ranker (`RankFn`), e.g. two-stage re-ranking."""
        return self._ranks_from(gallery, rank_fn)

    def metrics(self, ranks: Ranks) -> dict[str, float]:
        """Every metric of the protocol (`metric_names`, in order) from its ranks, then the id
        metrics whose per-query values `ranks` holds (`IdMetrics.per_query`)."""
        out = self._metrics(ranks)
        if self._id_metrics_from is not None:
            out.update(self._id_metrics_from(ranks))
        return out

    def id_metrics(self, gallery: Gallery, top_k: TopK | None = None) -> IdMetrics:
        """The id metrics and their per-query values, or only a one-line note saying why not.

        `top_k` retrieves the lists (None: exact top-K of the gallery's embeddings).
        """
        if self._id_metrics is None:
            return IdMetrics()
        if gallery.image_ids is None or gallery.caption_ids is None:
            return IdMetrics(
                note=f"{self.id_metrics_name} left out: the dataset has no image and caption ids"
            )
        return self._id_metrics(gallery, top_k)

    def evaluate(self, gallery: Gallery) -> dict[str, float]:
        """Every metric of the gallery: the rank metrics, then the id metrics when it carries ids
        (a note saying why they are left out is a warning)."""
        metrics = self.metrics(self.ranks(gallery))
        if self._id_metrics is not None and gallery.image_ids is not None:
            found = self.id_metrics(gallery)
            if found.note:
                warnings.warn(found.note, stacklevel=2)
            metrics.update(found.metrics)
        return metrics

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(m.key for m in self.metric_info)

    @property
    def all_metric_names(self) -> tuple[str, ...]:
        """The rank metrics, then the id metrics."""
        return tuple(m.key for m in (*self.metric_info, *self.id_metric_info))

    @property
    def columns(self) -> tuple[MetricInfo, ...]:
        return tuple(m for m in (*self.metric_info, *self.id_metric_info) if m.column)

    def info(self, key: str) -> MetricInfo | None:
        return next((m for m in (*self.metric_info, *self.id_metric_info) if m.key == key), None)


_PROTOCOLS: dict[str, Protocol] = {}


def register_protocol(protocol: Protocol) -> Protocol:
    _PROTOCOLS[protocol.name] = protocol
    return protocol


def list_protocols() -> list[str]:
    return list(_PROTOCOLS)


def get_protocol(name: str) -> Protocol:
    if name not in _PROTOCOLS:
        raise UserError(f"unknown protocol {name!r}; choose one of {', '.join(_PROTOCOLS)}")
    return _PROTOCOLS[name]


# --------------------------------------------------------------------------------------------- caption


def _caption_info(
    prefix: str = "", title: str = "", columns: tuple[str, ...] | None = None
) -> tuple[MetricInfo, ...]:
    def show(key: str) -> bool:
        return columns is None or key in columns

    out = []
    for direction in ("i2t", "t2i"):
        for k in (1, 5, 10):
            key = f"{direction}_r{k}"
            out.append(MetricInfo(f"{prefix}{key}", f"{title}{direction} R@{k}", column=show(key)))
    out.append(MetricInfo(f"{prefix}rsum", f"{title}rSum", column=show("rsum")))
    for name in ("medr", "meanr"):
        for direction in ("i2t", "t2i"):
            out.append(
                MetricInfo(f"{prefix}{direction}_{name}", f"{title}{direction} {name}", False, column=False)
            )
    return tuple(out)


def _caption_ranks(gallery: Gallery) -> Ranks:
    images, texts = gallery.embeddings()
    i2t, t2i = caption_ranks(images, texts, gallery.text_to_image, gallery.chunk_size, gallery.score_dtype)
    return {"i2t": i2t, "t2i": t2i}


def captions_of_images(owner: Tensor, num_images: int) -> Tensor:
    """[N, P] caption indices of each image (ascending), padded with -1."""
    order = torch.argsort(owner, stable=True)
    counts = torch.bincount(owner, minlength=num_images)
    starts = torch.cumsum(counts, 0) - counts
    slots = torch.arange(int(counts.max()), device=owner.device)
    position = (starts[:, None] + slots).clamp(max=max(0, owner.shape[0] - 1))
    return torch.where(slots < counts[:, None], order[position], -1)


def _subset_ranks(images: Tensor, texts: Tensor, owner: Tensor, rank_fn: RankFn) -> Ranks:
    """Caption-protocol ranks of a subset: `images` / `texts` are rows of the full sets, `owner`
    [len(texts)] the position (in `images`) of each caption's image."""
    t2i = rank_fn("t2i", texts, images, owner[:, None])[:, 0]
    own = captions_of_images(owner, images.shape[0])
    i2t = rank_fn("i2t", images, texts, own)
    best = torch.where(own >= 0, i2t, torch.iinfo(torch.int64).max).amin(1)
    return {"i2t": best, "t2i": t2i}


def _all_rows(gallery: Gallery) -> tuple[Tensor, Tensor, Tensor]:
    owner = gallery.text_to_image.long()
    device = owner.device
    return torch.arange(gallery.num_images, device=device), torch.arange(owner.shape[0], device=device), owner


def _caption_ranks_from(gallery: Gallery, rank_fn: RankFn) -> Ranks:
    images, texts, owner = _all_rows(gallery)
    return _subset_ranks(images, texts, owner, rank_fn)


def _caption_metrics(ranks: Ranks) -> dict[str, float]:
    return caption_metrics_from_ranks(ranks["i2t"], ranks["t2i"])


CAPTION = register_protocol(
    Protocol(
        name="caption",
        summary="image->text and text->image recall, 5 captions per image (Flickr30K, synth)",
        positives="image",
        metric_info=_caption_info(),
        headline="rsum",
        selection="rsum",
        validation="caption",
        _ranks=_caption_ranks,
        _ranks_from=_caption_ranks_from,
        _metrics=_caption_metrics,
    )
)


# ------------------------------------------------------------------------------------------------ coco


COCO_1K_FOLDS = 5


def fold_bounds(num_images: int, folds: int = COCO_1K_FOLDS) -> list[tuple[int, int]]:
    """Contiguous [start, stop) image ranges with numpy.array_split's sizes (larger folds first)."""
    if num_images < folds:
        raise UserError(f"COCO 1K needs at least {folds} images to make {folds} folds, got {num_images}")
    base, extra = divmod(num_images, folds)
    bounds, start = [], 0
    for k in range(folds):
        stop = start + base + (1 if k < extra else 0)
        bounds.append((start, stop))
        start = stop
    return bounds


def coco_folds(owner: Tensor, num_images: int) -> list[tuple[int, int, Tensor]]:
    """COCO 1K: (first image, end image, caption indices) of each of the five folds in image order."""
    return [
        (start, stop, torch.nonzero((owner >= start) & (owner < stop)).squeeze(1))
        for start, stop in fold_bounds(num_images)
    ]


def _fold_ranks(gallery: Gallery, rank: Callable[[int, int, Tensor], Ranks]) -> Ranks:
    """Concatenated per-fold ranks plus each query's fold number (`1k/{i2t,t2i}` and `_fold`)."""
    owner = gallery.text_to_image.long()
    parts: dict[str, list[Tensor]] = {"i2t": [], "t2i": [], "i2t_fold": [], "t2i_fold": []}
    for number, (start, stop, captions) in enumerate(coco_folds(owner, gallery.num_images)):
        fold = rank(start, stop, captions)
        for direction in ("i2t", "t2i"):
            parts[direction].append(fold[direction])
            parts[f"{direction}_fold"].append(torch.full_like(fold[direction], number))
    return {f"1k/{key}": torch.cat(values) for key, values in parts.items()}


def _coco1k_ranks(gallery: Gallery) -> Ranks:
    images, texts = gallery.embeddings()
    check_embeddings("image embeddings", images)
    owner = check_owner_index(gallery.text_to_image, texts.shape[0], images.shape[0], images.device)

    def rank(start: int, stop: int, captions: Tensor) -> Ranks:
        i2t, t2i = caption_ranks(
            images[start:stop],
            texts[captions],
            owner[captions] - start,
            gallery.chunk_size,
            gallery.score_dtype,
        )
        return {"i2t": i2t, "t2i": t2i}

    return _fold_ranks(gallery, rank)


def _coco1k_ranks_from(gallery: Gallery, rank_fn: RankFn) -> Ranks:
    images, _, owner = _all_rows(gallery)

    def rank(start: int, stop: int, captions: Tensor) -> Ranks:
        return _subset_ranks(images[start:stop], captions, owner[captions] - start, rank_fn)

    return _fold_ranks(gallery, rank)


def _coco1k_metrics(ranks: Ranks) -> dict[str, float]:
    folds = []
    for number in range(int(ranks["1k/i2t_fold"].max()) + 1):
        i2t = ranks["1k/i2t"][ranks["1k/i2t_fold"] == number]
        t2i = ranks["1k/t2i"][ranks["1k/t2i_fold"] == number]
        if i2t.numel() and t2i.numel():  # a bootstrap resample of a small set can miss a fold
            folds.append(caption_metrics_from_ranks(i2t, t2i))
    return {f"1k/{key}": sum(f[key] for f in folds) / len(folds) for key in folds[0]}


def _prefixed(ranks: Ranks, prefix: str) -> Ranks:
    return {f"{prefix}{key}": value for key, value in ranks.items()}


def _coco_ranks(gallery: Gallery) -> Ranks:
    return {**_prefixed(_caption_ranks(gallery), "5k/"), **_coco1k_ranks(gallery)}


def _coco_ranks_from(gallery: Gallery, rank_fn: RankFn) -> Ranks:
    return {**_prefixed(_caption_ranks_from(gallery, rank_fn), "5k/"), **_coco1k_ranks_from(gallery, rank_fn)}


def _coco5k_metrics(ranks: Ranks) -> dict[str, float]:
    return {f"5k/{k}": v for k, v in caption_metrics_from_ranks(ranks["5k/i2t"], ranks["5k/t2i"]).items()}


def _coco_metrics(ranks: Ranks) -> dict[str, float]:
    return {**_coco5k_metrics(ranks), **_coco1k_metrics(ranks)}


_COCO_1K_COLUMNS = ("i2t_r1", "t2i_r1", "rsum")


ECCV_NAME = "ECCV Caption / CxC metrics"


def _eccv_info() -> tuple[MetricInfo, ...]:
    titles = {"map_at_r": "mAP@R", "rprecision": "R-P", "r1": "R@1", "r5": "R@5", "r10": "R@10"}
    shown = ("eccv/i2t_map_at_r", "eccv/t2i_map_at_r", "cxc/i2t_r1", "cxc/t2i_r1")
    out = []
    for key in ECCV_METRIC_NAMES:
        family, metric = key.split("/")
        direction, _, what = metric.partition("_")
        title = f"{'ECCV' if family == 'eccv' else 'CxC'} {direction} {titles[what]}"
        out.append(MetricInfo(key, title, column=key in shown))
    return tuple(out)


def _eccv_metrics(gallery: Gallery, top_k: TopK | None) -> IdMetrics:
    """ECCV Caption and CxC (`metrics.eccv`) when the ids are the COCO 5K test split."""
    owner = gallery.text_to_image.long()
    problem = ids_problem(gallery.image_ids, gallery.caption_ids, owner)
    if problem:
        return IdMetrics(note=f"{ECCV_NAME} left out: {problem}")
    device = owner.device
    if top_k is None:
        images, texts = gallery.embeddings()
        device = images.device
        top_k = embedding_top_k(
            images, texts, gallery.chunk_size, resolve_score_dtype(gallery.score_dtype, device)
        )
    metrics, values = eccv_cxc_metrics(gallery.image_ids, gallery.caption_ids, top_k, device)
    return IdMetrics(metrics, {name: torch.from_numpy(value) for name, value in values.items()})


COCO = register_protocol(
    Protocol(
        name="coco",
        summary="MS-COCO: the 5K test set (5k/...) and the mean of its five 1K folds (1k/...)",
        positives="image",
        metric_info=_caption_info("1k/", "1K ", _COCO_1K_COLUMNS) + _caption_info("5k/", "5K "),
        headline="5k/rsum",
        selection="rsum",
        validation="caption",
        _ranks=_coco_ranks,
        _ranks_from=_coco_ranks_from,
        _metrics=_coco_metrics,
        id_metric_info=_eccv_info(),
        id_metrics_name=ECCV_NAME,
        _id_metrics=_eccv_metrics,
        _id_metrics_from=metrics_from_values,
    )
)


def _unprefixed(metrics: dict[str, float], prefix: str) -> dict[str, float]:
    return {key.removeprefix(prefix): value for key, value in metrics.items()}


register_protocol(
    Protocol(
        name="coco1k",
        summary="MS-COCO 1K: the mean over five 1K folds in image order",
        positives="image",
        metric_info=_caption_info(),
        headline="rsum",
        selection="rsum",
        validation="caption",
        _ranks=_coco1k_ranks,
        _ranks_from=_coco1k_ranks_from,
        _metrics=lambda ranks: _unprefixed(_coco1k_metrics(ranks), "1k/"),
    )
)
register_protocol(
    Protocol(
        name="coco5k",
        summary="MS-COCO 5K: the caption protocol over the whole test set",
        positives="image",
        metric_info=_caption_info(),
        headline="rsum",
        selection="rsum",
        validation="caption",
        _ranks=lambda gallery: _prefixed(_caption_ranks(gallery), "5k/"),
        _ranks_from=lambda gallery, rank_fn: _prefixed(_caption_ranks_from(gallery, rank_fn), "5k/"),
        _metrics=lambda ranks: _unprefixed(_coco5k_metrics(ranks), "5k/"),
        id_metric_info=_eccv_info(),
        id_metrics_name=ECCV_NAME,
        _id_metrics=_eccv_metrics,
        _id_metrics_from=metrics_from_values,
    )
)


# ---------------------------------------------------------------------------------------------- person


def _pids(gallery: Gallery) -> tuple[Tensor, Tensor]:
    if gallery.image_pids is None or gallery.text_pids is None:
        raise UserError("the person protocol needs person ids for the images and the captions")
    return gallery.image_pids, gallery.text_pids


def _person_ranks(gallery: Gallery) -> Ranks:
    images, texts = gallery.embeddings()
    image_pids, text_pids = _pids(gallery)
    return {
        "t2i": person_ranks(texts, images, text_pids, image_pids, gallery.chunk_size, gallery.score_dtype)
    }


def _person_ranks_from(gallery: Gallery, rank_fn: RankFn) -> Ranks:
    image_pids, text_pids = _pids(gallery)
    device = text_pids.device
    positives = positive_gallery_index(text_pids.long(), image_pids.to(device).long())
    images = torch.arange(image_pids.shape[0], device=device)
    texts = torch.arange(text_pids.shape[0], device=device)
    return {"t2i": rank_fn("t2i", texts, images, positives)}


PERSON = register_protocol(
    Protocol(
        name="person",
        summary="text-to-image person search: a hit is any image of the query's person (R@K, mAP, mINP)",
        positives="pid",
        metric_info=(
            MetricInfo("r1", "R@1"),
            MetricInfo("r5", "R@5"),
            MetricInfo("r10", "R@10"),
            MetricInfo("map", "mAP"),
            MetricInfo("minp", "mINP"),
        ),
        headline="r1",
        selection="r1",
        validation="person",
        _ranks=_person_ranks,
        _ranks_from=_person_ranks_from,
        _metrics=lambda ranks: person_metrics_from_ranks(ranks["t2i"]),
    )
)


# ------------------------------------------------------------------------ functional entry points


def _embedding_gallery(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None,
    score_dtype: torch.dtype | str,
) -> Gallery:
    return Gallery(text_to_image, image_emb, text_emb, chunk_size=chunk_size, score_dtype=score_dtype)


def coco_1k(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype | str = torch.float32,
) -> dict[str, float]:
    """COCO 1K: images split into five contiguous folds in image order; each fold is scored on
    its images and the captions they own; every metric is the mean over the folds."""
    gallery = _embedding_gallery(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    return get_protocol("coco1k").evaluate(gallery)


def coco_5k(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype | str = torch.float32,
) -> dict[str, float]:
    """COCO 5K: the plain caption protocol over the whole test set."""
    gallery = _embedding_gallery(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    return get_protocol("coco5k").evaluate(gallery)


def coco_retrieval(
    image_emb: Tensor,
    text_emb: Tensor,
    text_to_image: Tensor,
    chunk_size: int | None = None,
    score_dtype: torch.dtype | str = torch.float32,
) -> dict[str, float]:
    """Both COCO conventions, keys prefixed `5k/<name>` and `1k/<name>`."""
    gallery = _embedding_gallery(image_emb, text_emb, text_to_image, chunk_size, score_dtype)
    return COCO.evaluate(gallery)
