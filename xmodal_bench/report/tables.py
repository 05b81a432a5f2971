"""Leaderboard tables: rows from results records, columns from the protocol registry.

Rows are (method, scale, config, inference mode), the method's primary mode first: runs that
differ only by seed share a row and are averaged (mean ± std); a run with other settings (an
ablation, more epochs) gets its own row, labelled with what it changed. Columns are the
protocol's metrics (`metrics.protocols`: titles and which way is better are defined there), a
ranking-agreement column, then efficiency. The best value of each column is in bold (highest for
recalls, mAP and throughput; lowest for ranks, latency, parameters and memory).

Rank-based columns (and COCO's ECCV / CxC and Kendall tau, from their saved per-query values)
also carry a paired-bootstrap 95% interval over the test queries, from each run's saved ranks
(`report.significance`; a row's seeds are averaged resample by resample), and a † on every row
that is not significantly below the column's best.
"""

from __future__ import annotations

import csv
import io
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from xmodal_bench.bcls.tau import TAU_INFO
from xmodal_bench.metrics.protocols import MetricInfo, get_protocol

Column = MetricInfo

# agreement of the run's global test scores with caption-similarity pseudo-labels (`bcls.tau`):
# what BCLS trains for, reported for every method so base and +BCLS rows compare
RANKING_COLUMNS = [TAU_INFO]

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
    start: str = ""  # zero-shot rows: the model and weights evaluated ("xmb-tiny synthclip")
    runs: list[str] = field(default_factory=list)  # run folders (their ranks.npz), one per seed
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # column -> 95% interval
    not_below_best: set[str] = field(default_factory=set)  # columns where it ties the best (†)

    @property
    def zero_shot(self) -> bool:
        return bool(self.start)

    @property
    def label(self) -> str:
        head = [f"zero-shot ({self.start})"] if self.zero_shot else [self.method]
        name = " ".join([*head, *self.changes])
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
    values["kendall_tau"] = (entry.get("kendall_tau") or {}).get("kendall_tau")
    for key in ("train_samples_per_s", "images_per_s", "params_m", "peak_memory_mb"):
        values[key] = efficiency.get(key)
    return {k: float(v) for k, v in values.items() if v is not None}


def build_rows(records: list[dict[str, Any]]) -> list[Row]:
    """Group records by (method, scale, config id, mode); each record adds one value per column."""
    grouped: dict[tuple[str, str, str, str], Row] = {}
    for record in records:
        scale, changes = record.get("scale", ""), tuple(record.get("changes") or ())
        start = _zero_shot_start(record)
        if start:  # the model and weights are in the label already
            changes = tuple(
                c for c in changes if not c.startswith(("backbone.model=", "backbone.pretrained="))
            )
        for mode in record["modes"]:
            primary = mode == record["primary_mode"]
            key = (record["method"], scale, record.get("config_id", ""), mode)
            row = grouped.setdefault(
                key, Row(record["method"], scale, mode, primary, defaultdict(list), changes, start)
            )
            for column, value in _row_values(record, mode).items():
                row.values[column].append(value)
            if record.get("_path"):
                row.runs.append(str(Path(record["_path"]).parent))
    # zero-shot rows head their table: every other row says what training added to them
    return sorted(
        grouped.values(), key=lambda r: (r.scale, not r.zero_shot, r.method, r.changes, not r.primary, r.mode)
    )


def _zero_shot_start(record: dict[str, Any]) -> str:
    """ "model weights" of a zero-shot record (nothing trained), else ""."""
    if not (record.get("training") or {}).get("zero_shot"):
        return ""
    backbone = (record.get("config") or {}).get("backbone") or {}
    weights = backbone.get("pretrained")
    weights = Path(str(weights)).stem if weights and ("/" in str(weights)) else (weights or "random")
    return f"{backbone.get('model', '?')} {weights}"


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
    text = f"{text} ± {std:.{column.digits}f}" if std is not None else text
    if column.key in row.intervals:
        low, high = row.intervals[column.key]
        text += f" [{low:.{column.digits}f}, {high:.{column.digits}f}]"
    return text


@dataclass
class Leaderboard:
    dataset: str
    protocol: str
    rows: list[Row]
    common: tuple[str, ...] = ()  # settings every row shares (a sweep's overrides): said once, not per row

    @property
    def columns(self) -> list[Column]:
        return [*get_protocol(self.protocol).columns, *RANKING_COLUMNS, *EFFICIENCY_COLUMNS]

    def markdown(self) -> str:
        columns = self.columns
        header = ["method", "scale", "seeds", *[c.title for c in columns]]
        lines = [
            f"# Leaderboard: {self.dataset} ({self.protocol} protocol)",
            "",
            "Generated by `xmodal-bench leaderboard` from every `runs/*/*/*/results.json`; "
            "mean ± std over seeds; best of each column in bold.",
            *(
                [
                    "[low, high]: paired-bootstrap 95% interval over the test queries; "
                    "†: not significantly below the column's best.",
                ]
                if any(row.intervals for row in self.rows)
                else []
            ),
            "",
            *([f"Settings shared by every row: `{' '.join(self.common)}`.", ""] if self.common else []),
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
                tied = not bold and column.key in row.not_below_best
                cells.append(f"**{text}**" if bold and len(self.rows) > 1 else f"{text} †" if tied else text)
            lines.append("| " + " | ".join([row.label, row.scale, str(row.seeds), *cells]) + " |")
        return "\n".join(lines) + "\n"

    def records(self) -> list[dict[str, Any]]:
        out = []
        for row in self.rows:
            record: dict[str, Any] = {
                "method": row.method,
                "label": row.label,
                "changes": " ".join(row.changes),
                "scale": row.scale,
                "mode": row.mode,
                "primary": row.primary,
                "seeds": row.seeds,
            }
            for column in self.columns:
                record[column.key] = row.mean(column.key)
                record[f"{column.key}_std"] = row.std(column.key)
                low, high = row.intervals.get(column.key, (None, None))
                record[f"{column.key}_ci_low"], record[f"{column.key}_ci_high"] = low, high
                record[f"{column.key}_not_below_best"] = column.key in row.not_below_best
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
    """The table of `dataset`. Changes shared by every row (the overrides of the sweep that made
    them) are taken out of the row labels and stated once above the table."""
    mine = [r for r in records if r.get("dataset") == dataset]
    protocol = mine[0]["protocol"] if mine else "caption"
    rows = build_rows(mine)
    common = tuple(c for c in rows[0].changes if all(c in row.changes for row in rows)) if rows else ()
    for row in rows:
        row.changes = tuple(c for c in row.changes if c not in common)
    if rows:
        from xmodal_bench.report.significance import annotate

        annotate(rows, get_protocol(protocol))
    return Leaderboard(dataset, protocol, rows, common)
