"""Paired bootstrap over queries, from the per-query ranks every run saves (`report.ranks`).

A resample draws, per query set, as many queries as it has, with replacement (seeded), and
recomputes the protocol's metrics from the resampled ranks (`Protocol.metrics`), so every
rank-based metric gets a distribution, recalls, rSum, median ranks, mAP and COCO's fold means
alike. Query sets are the rank arrays of one direction and length: `5k/t2i`, `1k/t2i` and
`1k/t2i_fold` share one draw, `5k/i2t` ... another. Two runs on the same split are *paired*: the
same draw resamples both, so the distribution of a difference is the difference of the two
distributions, resample by resample.

- interval: the percentile interval of the distribution (95% by default);
- p-value of a paired difference: two-sided, 2 x min(P(d <= 0), P(d >= 0)), at most 1 (a run
  against itself: every d is 0, p = 1);
- a leaderboard row is *not significantly below* the best of a column when the interval of
  (row - best), in the column's better direction, reaches 0.

The id metrics that are means over queries (COCO's ECCV Caption and CxC) are resampled the same
way, from the per-query values a run saves with its ranks (`metrics.protocols.IdMetrics`): their
arrays are named by direction (`eccv/t2i_map_at_r`), so they share the draw of that direction's
ranks and pair like them. Kendall tau and efficiency get no interval.

A run computes its own distributions once, when it saves its ranks (`save_bootstrap`,
`bootstrap.npz` beside `ranks.npz`): the draw depends only on the query sets, the resample count
and the seed, so a run's saved distribution is the one any leaderboard of its split would draw,
and a rebuild reads it instead of resampling every run again. Runs without one (older runs, other
resample counts) are resampled on the fly.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from xmodal_bench.atomic import atomic_write_bytes
from xmodal_bench.errors import UserError
from xmodal_bench.metrics.protocols import Protocol, Ranks
from xmodal_bench.report.ranks import load_ranks

RESAMPLES = 1000
SEED = 0
LEVEL = 0.95
BOOTSTRAP_FILE = "bootstrap.npz"

Plan = dict[tuple[str, int], Tensor]  # query set -> [resamples, size] query indices
MetricsFn = Callable[[Ranks], dict[str, float]]


def query_set(name: str, ranks: Tensor) -> tuple[str, int]:
    """The query set a rank array belongs to: (direction, number of queries)."""
    direction = name.rsplit("/", 1)[-1].split("_", 1)[0]
    return direction, int(ranks.shape[0])


def draw(ranks: Ranks, resamples: int = RESAMPLES, seed: int = SEED) -> Plan:
    """Seeded resampling indices for every query set of `ranks` (the same for every run of a split)."""
    generator = torch.Generator().manual_seed(seed)
    plan: Plan = {}
    for key in sorted({query_set(name, value) for name, value in ranks.items()}):
        plan[key] = torch.randint(0, key[1], (resamples, key[1]), generator=generator)
    return plan


def check_same_layout(plan: Plan, ranks: Ranks, what: str) -> None:
    """UserError unless `ranks` has exactly the query sets the plan was drawn for."""
    found = {query_set(name, value) for name, value in ranks.items()}
    if found != set(plan):
        raise UserError(
            f"{what} ranks other queries ({sorted(found)} vs {sorted(plan)}): "
            "paired comparisons need runs on the same split"
        )


def distribution(metrics: MetricsFn, ranks: Ranks, plan: Plan) -> dict[str, np.ndarray]:
    """{metric: [resamples] values} of `metrics` over the plan's resamples of `ranks`."""
    check_same_layout(plan, ranks, "a run")
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
    """Write every mode's distribution of the protocol's metrics to `folder/bootstrap.npz` (no pickle)."""
    arrays = {"resamples": np.asarray(resamples), "seed": np.asarray(seed)}
    for mode, ranks in ranks_by_mode.items():
        for key, values in distribution(protocol.metrics, ranks, draw(ranks, resamples, seed)).items():
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
    resample count or seed, or missing one of the metric `keys`)."""
    path = Path(folder) / BOOTSTRAP_FILE
    if not path.is_file():
        return None
    prefix = f"{mode}/"
    try:
        with np.load(path, allow_pickle=False) as data:
            if int(data["resamples"]) != resamples or int(data["seed"]) != seed:
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
    """Per metric of the protocol: a, b, difference a - b, its interval and p-value (paired)."""
    plan = draw(ranks_a, resamples, seed)
    check_same_layout(plan, ranks_b, "the second run")
    point_a, point_b = protocol.metrics(ranks_a), protocol.metrics(ranks_b)
    dist_a = distribution(protocol.metrics, ranks_a, plan)
    dist_b = distribution(protocol.metrics, ranks_b, plan)
    rows = []
    for key in protocol.all_metric_names:
        if key not in point_a or key not in point_b:  # id metrics one of the runs lacks
            continue
        info = protocol.info(key)
        differences = dist_a[key] - dist_b[key]
        low, high = interval(differences, level)
        rows.append(
            {
                "metric": key,
                "higher_is_better": bool(info.higher_is_better) if info else True,
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

    Rows whose runs lack ranks (older runs), or rank other queries, get neither; the draw is the
    one of the first row with ranks, so every row is resampled alike (paired).
    """
    plan: Plan | None = None
    rows_dist: dict[int, dict[str, np.ndarray]] = {}
    for number, row in enumerate(rows):
        runs = []
        try:
            for folder in row.runs:
                ranks = run_ranks(Path(folder), row.mode)
                plan = plan if plan is not None else draw(ranks, resamples, seed)
                check_same_layout(plan, ranks, "a run")  # then its saved draw is this plan
                keys = list(protocol.metrics(ranks))
                saved = saved_distribution(Path(folder), row.mode, keys, resamples, seed)
                runs.append(saved if saved is not None else distribution(protocol.metrics, ranks, plan))
        except UserError:
            continue
        if runs:
            rows_dist[number] = mean_distribution(runs)
    columns = protocol.columns
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
