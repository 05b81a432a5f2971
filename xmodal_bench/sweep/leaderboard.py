"""Leaderboards: one table per dataset from every `results.json`, as markdown, csv and json.

Rows are (method, scale, config, inference mode), the method's primary mode first: runs that
differ only by seed share a row and are averaged (mean ± std); a run with other settings (an
ablation, more epochs) gets its own row, labelled with what it changed. Columns are the protocol's metrics, then efficiency. The best value of
each column is in bold (highest for recalls, mAP and throughput; lowest for ranks, latency,
parameters and memory).
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmodal_bench.atomic import atomic_write_json, atomic_write_text
from xmodal_bench.sweep.results import find_results


@dataclass(frozen=True)
class Column:
    key: str  # where the value is in a row record
    title: str
    higher_is_better: bool = True
    digits: int = 2


METRIC_COLUMNS: dict[str, list[Column]] = {
    "caption": [
        Column("i2t_r1", "i2t R@1"),
        Column("i2t_r5", "i2t R@5"),
        Column("i2t_r10", "i2t R@10"),
        Column("t2i_r1", "t2i R@1"),
        Column("t2i_r5", "t2i R@5"),
        Column("t2i_r10", "t2i R@10"),
        Column("rsum", "rSum"),
    ],
    "coco": [
        Column("1k/i2t_r1", "1K i2t R@1"),
        Column("1k/t2i_r1", "1K t2i R@1"),
        Column("1k/rsum", "1K rSum"),
        Column("5k/i2t_r1", "5K i2t R@1"),
        Column("5k/i2t_r5", "5K i2t R@5"),
        Column("5k/i2t_r10", "5K i2t R@10"),
        Column("5k/t2i_r1", "5K t2i R@1"),
        Column("5k/t2i_r5", "5K t2i R@5"),
        Column("5k/t2i_r10", "5K t2i R@10"),
        Column("5k/rsum", "5K rSum"),
    ],
    "person": [
        Column("r1", "R@1"),
        Column("r5", "R@5"),
        Column("r10", "R@10"),
        Column("map", "mAP"),
        Column("minp", "mINP"),
    ],
}

EFFICIENCY_COLUMNS = [
    Column("t2i_ms", "t2i ms/query", higher_is_better=False, digits=3),
    Column("train_samples_per_s", "train samples/s", digits=1),
    Column("images_per_s", "images/s", digits=1),
    Column("params_m", "params (M)", higher_is_better=False, digits=1),
    Column("peak_memory_mb", "peak mem (MB)", higher_is_better=False, digits=0),
]


@dataclass
class Row:
    method: str
    scale: str
    mode: str
    primary: bool
    values: dict[str, list[float]]  # column key -> one value per seed
    changes: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        name = " ".join([self.method, *self.changes])
        return name if self.primary else f"{name} · {self.mode}"

    def mean(self, key: str) -> float | None:
        values = self.values.get(key) or []
        return statistics.fmean(values) if values else None

    def std(self, key: str) -> float | None:
        values = self.values.get(key) or []
        return statistics.stdev(values) if len(values) > 1 else None

    @property
    def seeds(self) -> int:
        return max((len(v) for v in self.values.values()), default=0)


def _row_values(record: dict[str, Any], mode: str) -> dict[str, float]:
    entry = record["modes"][mode]
    efficiency = record.get("efficiency") or {}
    values = {k: v for k, v in entry["metrics"].items() if isinstance(v, (int, float))}
    values["t2i_ms"] = (entry.get("latency_ms") or {}).get("t2i_ms")
    for key in ("train_samples_per_s", "images_per_s", "params_m", "peak_memory_mb"):
        values[key] = efficiency.get(key)
    return {k: float(v) for k, v in values.items() if v is not None}


def build_rows(records: list[dict[str, Any]]) -> list[Row]:
    """Group records by (method, scale, config id, mode); each record adds one value per column."""
    grouped: dict[tuple[str, str, str, str], Row] = {}
    for record in records:
        scale, changes = record.get("scale", ""), tuple(record.get("changes") or ())
        for mode in record["modes"]:
            primary = mode == record["primary_mode"]
            key = (record["method"], scale, record.get("config_id", ""), mode)
            row = grouped.setdefault(
                key, Row(record["method"], scale, mode, primary, defaultdict(list), changes)
            )
            for column, value in _row_values(record, mode).items():
                row.values[column].append(value)
    return sorted(grouped.values(), key=lambda r: (r.scale, r.method, r.changes, not r.primary, r.mode))


def _best(rows: list[Row], column: Column) -> float | None:
    values = [v for v in (r.mean(column.key) for r in rows) if v is not None]
    if not values:
        return None
    return max(values) if column.higher_is_better else min(values)


def _cell(row: Row, column: Column) -> str:
    mean = row.mean(column.key)
    if mean is None:
        return "–"
    std = row.std(column.key)
    text = f"{mean:.{column.digits}f}"
    return f"{text} ± {std:.{column.digits}f}" if std is not None else text


@dataclass
class Leaderboard:
    dataset: str
    protocol: str
    rows: list[Row]

    @property
    def columns(self) -> list[Column]:
        return METRIC_COLUMNS.get(self.protocol, METRIC_COLUMNS["caption"]) + EFFICIENCY_COLUMNS

    def markdown(self) -> str:
        columns = self.columns
        header = ["method", "scale", "seeds", *[c.title for c in columns]]
        lines = [
            f"# Leaderboard: {self.dataset} ({self.protocol} protocol)",
            "",
            "Generated by `xmodal-bench leaderboard` from every `runs/*/*/*/results.json`; "
            "mean ± std over seeds; best of each column in bold.",
            "",
            "| " + " | ".join(header) + " |",
            "|" + "|".join(["---"] * 3 + ["---:"] * len(columns)) + "|",
        ]
        best = {c.key: _best(self.rows, c) for c in columns}
        for row in self.rows:
            cells = []
            for column in columns:
                text = _cell(row, column)
                mean = row.mean(column.key)
                bold = (
                    mean is not None
                    and best[column.key] is not None
                    and round(mean, column.digits) == round(best[column.key], column.digits)
                )
                cells.append(f"**{text}**" if bold and len(self.rows) > 1 else text)
            lines.append("| " + " | ".join([row.label, row.scale, str(row.seeds), *cells]) + " |")
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows:
            record: dict[str, Any] = {
                "method": row.method,
                "scale": row.scale,
                "mode": row.mode,
                "primary": row.primary,
                "seeds": row.seeds,
            }
            for column in self.columns:
                record[column.key] = row.mean(column.key)
                record[f"{column.key}_std"] = row.std(column.key)
            out.append(record)
        return out

    def csv(self) -> str:
        records = self.records()
        buffer = io.StringIO()
        if records:
            writer = csv.DictWriter(buffer, fieldnames=list(records[0]))
            writer.writeheader()
            writer.writerows(records)
        return buffer.getvalue()


def build_leaderboard(records: list[dict[str, Any]], dataset: str) -> Leaderboard:
    mine = [r for r in records if r.get("dataset") == dataset]
    protocol = mine[0]["protocol"] if mine else "caption"
    return Leaderboard(dataset, protocol, build_rows(mine))


def write_leaderboard(runs_dir: Path, out_dir: Path, dataset: str) -> list[Path]:
    """Rebuild `out_dir/{dataset}.{md,csv,json}` from every results file under `runs_dir`."""
    board = build_leaderboard(find_results(runs_dir), dataset)
    paths = [out_dir / f"{dataset}.md", out_dir / f"{dataset}.csv", out_dir / f"{dataset}.json"]
    atomic_write_text(paths[0], board.markdown())
    atomic_write_text(paths[1], board.csv())
    atomic_write_json(paths[2], {"dataset": dataset, "protocol": board.protocol, "rows": board.records()})
    return paths
