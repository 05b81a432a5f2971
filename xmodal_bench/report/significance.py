"""Paired bootstrap over queries, from the per-query ranks every run saves (`report.ranks`).

A resample draws, per query set, as many queries as it has, with replacement, and recomputes
the metrics from the resampled ranks (`run_metrics`: `Protocol.metrics` and Kendall tau), so
every rank-based metric gets a distribution, recalls, rSum, median ranks, mAP and COCO's fold
means alike. Query sets are the arrays of one direction and length: `5k/t2i`, `1k/t2i` and
`1k/t2i_fold` share one draw, `5k/i2t` ... another. Each set's draw is seeded by the seed, its
direction and its length alone, so it is the same whatever other sets a run has. Two runs on the
same split are *paired*: the same draw resamples both, so the distribution of a difference is
the difference of the two distributions, resample by resample.

- interval: the percentile interval of the distribution (95% by default);
- p-value of a paired difference: two-sided, 2 x min(P(d <= 0), P(d >= 0)), at most 1 (a run
  against itself: every d is 0, p = 1);
- a leaderboard row is *not significantly below* the best of a column when the interval of
  (row - best), in the column's better direction, reaches 0.

The id metrics that are means over queries (COCO's ECCV Caption and CxC) are resampled the same
way, from the per-query values a run saves with its ranks (`metrics.protocols.IdMetrics`): their
arrays are named by direction (`eccv/t2i_map_at_r`), so they share the draw of that direction's
ranks and pair like them. So is Kendall tau, from each measured query's tau (`bcls.tau`: saved
with the primary mode's ranks as `tau/t2i`, `tau/i2t`). Efficiency gets no interval.

A run computes its own distributions once, when it saves its ranks (`save_bootstrap`,
`bootstrap.npz` beside `ranks.npz`): the draw depends only on the query sets, the resample count
and the seed, so a run's saved distribution is the one any leaderboard of its split would draw,
and a rebuild reads it instead of resampling every run again. Runs without one (older runs, other
resample counts) are resampled on the fly.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xmodal_bench.atomic import atomic_write_bytes
from xmodal_bench.bcls.tau import TAU_INFO, tau_from_values
from xmodal_bench.errors import UserError
from xmodal_bench.metrics.protocols import MetricInfo, Protocol, Ranks
from xmodal_bench.report.ranks import load_ranks

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
BOOTSTRAP_FILE = "bootstrap.npz"
DRAW_VERSION = 2  # 2: one generator per query set (1: one generator for all sets in turn)
TAU_NAMES = ("kendall_tau", "kendall_tau/t2i", "kendall_tau/i2t")

Plan = dict[tuple[str, int], Tensor]  # query set -> [resamples, size] query indices
MetricsFn = Callable[[Ranks], dict[str, float]]


def query_set(name: str, ranks: Tensor) -> tuple[str, int]:
    """The query set a rank array belongs to: (direction, number of queries)."""
    direction = name.rsplit("/", 1)[-1].split("_", 1)[0]
    return direction, int(ranks.shape[0])


def run_metrics(protocol: Protocol) -> MetricsFn:
    """Every metric a run's saved arrays give: the protocol's, then Kendall tau when saved."""

    def metrics(ranks: Ranks) -> dict[str, float]:
        return {**protocol.metrics(ranks), **tau_from_values(ranks)}

    return metrics


def metric_info(protocol: Protocol, key: str) -> MetricInfo | None:
    """The protocol's description of `key`, or Kendall tau's."""
    return protocol.info(key) or (TAU_INFO if key == TAU_INFO.key else None)


def draw(ranks: Ranks, resamples: int = RESAMPLES, seed: int = SEED) -> Plan:
    """Seeded resampling indices for every query set of `ranks` (the same for every run of a split).

    Each set has its own generator, seeded by (seed, direction, length), so a set's draw does
    not depend on which other sets the run has.
    """
    plan: Plan = {}
    for key in sorted({query_set(name, value) for name, value in ranks.items()}):
        direction, size = key
        mixed = (seed * 2**32 + zlib.crc32(f"{direction}/{size}".encode())) % 2**64  # any int seed
        generator = torch.Generator().manual_seed(mixed)
        plan[key] = torch.randint(0, size, (resamples, size), generator=generator)
    return plan


def extend(plan: Plan, ranks: Ranks, what: str, resamples: int = RESAMPLES, seed: int = SEED) -> Plan:
    """`plan` with the draws of any query set of `ranks` it lacks (UserError when a direction
    has another length there: the runs are not on the same split)."""
    extra = draw({n: v for n, v in ranks.items() if query_set(n, v) not in plan}, resamples, seed)
    for direction, size in extra:
        known = sorted(s for d, s in plan if d == direction)
        if known:
            raise UserError(
                f"{what} ranks other queries ({direction}: {size} vs {', '.join(map(str, known))}): "
                "paired comparisons need runs on the same split"
            )
    return {**plan, **extra}


def distribution(metrics: MetricsFn, ranks: Ranks, plan: Plan) -> dict[str, np.ndarray]:
    """{metric: [resamples] values} of `metrics` over the plan's resamples of `ranks` (the plan
    must hold every query set of `ranks`: `draw`, `extend`)."""
    missing = {query_set(n, v) for n, v in ranks.items()} - set(plan)
    if missing:
        raise ValueError(f"the plan has no draw for {sorted(missing)}")
    resamples = next(iter(plan.values())).shape[0] if plan else 0
    columns: dict[str, list[float]] = {}
    for b in range(resamples):
        drawn = {name: value[plan[query_set(name, value)][b]] for name, value in ranks.items()}
        for key, value in metrics(drawn).items():
            columns.setdefault(key, []).append(value)
    return {key: np.asarray(values, dtype=np.float64) for key, values in columns.items()}


def mean_distribution(runs: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Runs averaged resample by resample (a leaderboard row: its seeds, each resampled alike)."""
    keys = set.intersection(*(set(run) for run in runs)) if runs else set()
    return {key: np.mean([run[key] for run in runs], axis=0) for key in sorted(keys)}


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of a bootstrap distribution."""
    tail = 100 * (1 - level) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def p_value(differences: np.ndarray) -> float:
    """Two-sided bootstrap p-value of a paired difference: 2 x the smaller tail at 0, at most 1."""
    below, above = float(np.mean(differences <= 0)), float(np.mean(differences >= 0))
    return min(1.0, 2 * min(below, above))


def not_below(row: np.ndarray, best: np.ndarray, higher_is_better: bool, level: float = LEVEL) -> bool:
    """True when `row` is not significantly worse than `best` (the interval of the gap reaches 0)."""
    gap = row - best if higher_is_better else best - row
    return interval(gap, level)[1] >= 0


def save_bootstrap(
    folder: Path,
    protocol: Protocol,
    ranks_by_mode: dict[str, Ranks],
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> Path:
    """Write every mode's distribution of its metrics (`run_metrics`) to `folder/bootstrap.npz` (no pickle)."""
    arrays = {"resamples": np.asarray(resamples), "seed": np.asarray(seed), "draw": np.asarray(DRAW_VERSION)}
    for mode, ranks in ranks_by_mode.items():
        for key, values in distribution(run_metrics(protocol), ranks, draw(ranks, resamples, seed)).items():
            arrays[f"{mode}/{key}"] = values
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    path = Path(folder) / BOOTSTRAP_FILE
    atomic_write_bytes(path, buffer.getvalue())
    return path


def saved_distribution(
    folder: Path, mode: str, keys: Sequence[str], resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, np.ndarray] | None:
    """The distribution `save_bootstrap` wrote for `mode`, or None (absent, unreadable, another
    resample count, seed or way of drawing, or missing one of the metric `keys`)."""
    path = Path(folder) / BOOTSTRAP_FILE
    if not path.is_file():
        return None
    prefix = f"{mode}/"
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["resamples"]) != resamples or int(data["seed"]) != seed:
                return None
            if "draw" not in data.files or int(data["draw"]) != DRAW_VERSION:
                return None
            out = {key[len(prefix) :]: data[key] for key in data.files if key.startswith(prefix)}
    except (OSError, ValueError, KeyError):
        return None
    if not set(keys) <= set(out) or any(v.shape != (resamples,) for v in out.values()):
        return None
    return {key: out[key] for key in keys}


def run_ranks(run_dir: Path, mode: str) -> Ranks:
    """The ranks of one inference mode of a run folder (UserError when absent)."""
    saved = load_ranks(Path(run_dir))
    if mode not in saved:
        raise UserError(f"{Path(run_dir)}: no ranks for mode {mode!r} (it has {', '.join(saved) or 'none'})")
    return saved[mode]


def compare(
    protocol: Protocol,
    ranks_a: Ranks,
    ranks_b: Ranks,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
) -> list[dict[str, float | str | bool]]:
    """Per metric both runs have (`run_metrics`): a, b, difference a - b, its interval and p-value (paired)."""
    plan = extend(draw(ranks_a, resamples, seed), ranks_b, "the second run", resamples, seed)
    metrics = run_metrics(protocol)
    point_a, point_b = metrics(ranks_a), metrics(ranks_b)
    dist_a = distribution(metrics, ranks_a, plan)
    dist_b = distribution(metrics, ranks_b, plan)
    rows = []
    for key in (*protocol.all_metric_names, *TAU_NAMES):
        # id metrics or tau one of the runs lacks, or tau undefined (every label tied)
        if key not in point_a or key not in point_b or math.isnan(point_a[key] - point_b[key]):
            continue
        info = metric_info(protocol, key)
        differences = dist_a[key] - dist_b[key]
        low, high = interval(differences, level)
        rows.append(
            {
                "metric": key,
                "higher_is_better": bool(info.higher_is_better) if info else True,
                "digits": info.digits if info else 2,
                "a": point_a[key],
                "b": point_b[key],
                "difference": point_a[key] - point_b[key],
                "low": low,
                "high": high,
                "p": p_value(differences),
            }
        )
    return rows


def annotate(rows: list, protocol: Protocol, resamples: int = RESAMPLES, seed: int = SEED) -> None:
    """Set each leaderboard row's `intervals` and `not_below_best` from its runs' saved ranks.

    Rows whose runs lack ranks (older runs), or rank other queries, get neither; every query set
    is drawn once for all rows (`extend`), so every row is resampled alike (paired). The columns
    are the protocol's and Kendall tau.
    """
    plan: Plan = {}
    metrics = run_metrics(protocol)
    rows_dist: dict[int, dict[str, np.ndarray]] = {}
    for number, row in enumerate(rows):
        runs = []
        try:
            for folder in row.runs:
                ranks = run_ranks(Path(folder), row.mode)
                plan = extend(plan, ranks, "a run", resamples, seed)  # then its saved draw is this plan
                keys = list(metrics(ranks))
                saved = saved_distribution(Path(folder), row.mode, keys, resamples, seed)
                runs.append(saved if saved is not None else distribution(metrics, ranks, plan))
        except UserError:
            continue
        if runs:  # an undefined value (tau with every label tied) has no interval
            rows_dist[number] = {k: v for k, v in mean_distribution(runs).items() if np.isfinite(v).all()}
    columns = (*protocol.columns, TAU_INFO)
    for number, dist in rows_dist.items():
        rows[number].intervals = {c.key: interval(dist[c.key]) for c in columns if c.key in dist}
    for column in columns:
        scored = [
            (row.mean(column.key), number)
            for number, row in enumerate(rows)
            if row.mean(column.key) is not None
        ]
        if not scored:
            continue
        best = (max if column.higher_is_better else min)(scored)[1]
        if column.key not in rows_dist.get(best, {}):
            continue
        for number, dist in rows_dist.items():
            if (
                number != best
                and column.key in dist
                and not_below(dist[column.key], rows_dist[best][column.key], column.higher_is_better)
            ):
                rows[number].not_below_best.add(column.key)
