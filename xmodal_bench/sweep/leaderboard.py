"""Leaderboards: one table per dataset from every `results.json`, as markdown, csv and json.

Rows are (method, scale, config, inference mode), the method's primary mode first: runs that
differ only by seed share a row and are averaged (mean ± std); a run with other settings (an
ablation, more epochs) gets its own row, labelled with what it changed. Columns are the
protocol's metrics, then efficiency. The best value of each column is in bold (highest for
recalls, mAP and throughput; lowest for ranks, latency, parameters and memory).

`write_leaderboards` rebuilds `{dataset}.{md,csv,json,png}` and the index `README.md` under an
exclusive file lock (`.leaderboards.lock` in the output folder), each file written atomically: two
runs finishing at once rebuild one after the other from every results file, never interleaved.
`xmodal-bench leaderboard` is the command line for it.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from xmodal_bench.atomic import atomic_write_json, atomic_write_text
from xmodal_bench.sweep.results import find_results

LOCK_FILE = ".leaderboards.lock"
INDEX_FILE = "README.md"


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

# agreement of the run's global test scores with caption-similarity pseudo-labels (`bcls.tau`):
# what BCLS trains for, reported for every method so base and +BCLS rows compare
RANKING_COLUMNS = [Column("kendall_tau", "Kendall τ", digits=3)]

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
    values["kendall_tau"] = (entry.get("kendall_tau") or {}).get("kendall_tau")
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
    common: tuple[str, ...] = ()  # settings every row shares (a sweep's overrides): said once, not per row

    @property
    def columns(self) -> list[Column]:
        metrics = METRIC_COLUMNS.get(self.protocol, METRIC_COLUMNS["caption"])
        return metrics + RANKING_COLUMNS + EFFICIENCY_COLUMNS

    def markdown(self) -> str:
        columns = self.columns
        header = ["method", "scale", "seeds", *[c.title for c in columns]]
        lines = [
            f"# Leaderboard: {self.dataset} ({self.protocol} protocol)",
            "",
            "Generated by `xmodal-bench leaderboard` from every `runs/*/*/*/results.json`; "
            "mean ± std over seeds; best of each column in bold.",
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
                cells.append(f"**{text}**" if bold and len(self.rows) > 1 else text)
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
    return Leaderboard(dataset, protocol, rows, common)


@contextlib.contextmanager
def leaderboard_lock(out_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on `out_dir` (blocking) while a rebuild reads results and writes tables."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LOCK_FILE, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _write_tables(board: Leaderboard, out_dir: Path) -> list[Path]:
    from xmodal_bench.sweep.plots import plot_accuracy_latency

    dataset = board.dataset
    paths = [out_dir / f"{dataset}.md", out_dir / f"{dataset}.csv", out_dir / f"{dataset}.json"]
    plot = plot_accuracy_latency(board, out_dir / f"{dataset}.png")
    markdown = board.markdown()
    if plot is not None:
        markdown += f"\n![{dataset}: accuracy vs t2i latency]({plot.name})\n"
        paths.append(plot)
    atomic_write_text(paths[0], markdown)
    atomic_write_text(paths[1], board.csv())
    atomic_write_json(
        paths[2],
        {
            "dataset": dataset,
            "protocol": board.protocol,
            "common": list(board.common),
            "rows": board.records(),
        },
    )
    return paths


def _read_table(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and isinstance(data.get("rows"), list) and data.get("dataset") == path.stem
    return data if ok else None


def _short(label: str, size: int = 40) -> str:
    return label if len(label) <= size else label[: size - 1] + "…"


def headline_metric(protocol: str) -> str:
    """The one accuracy figure of a protocol (plots, index): rSum for caption sets, R@1 for person."""
    return {"coco": "5k/rsum", "person": "r1"}.get(protocol, "rsum")


def write_index(out_dir: Path) -> Path:
    """`README.md` linking every dataset table found in `out_dir`, with its best primary row."""
    lines = [
        "# Leaderboards",
        "",
        "Generated by `xmodal-bench leaderboard` (and after every run) from every `runs/*/*/*/results.json`;",
        "do not edit by hand. One table per dataset: methods as rows, the protocol's metrics then",
        "efficiency, mean ± std over seeds, best of each column in bold.",
        "",
        "| dataset | protocol | rows | best (primary mode) | table | csv | json | plot |",
        "|---|---|---:|---|---|---|---|---|",
    ]
    plots = []
    for path in sorted(out_dir.glob("*.json")):
        table = _read_table(path)
        if table is None:
            continue
        name, protocol = table["dataset"], table.get("protocol", "caption")
        key = headline_metric(protocol)
        scored = [r for r in table["rows"] if r.get("primary") and r.get(key) is not None]
        best = max(scored, key=lambda r: r[key], default=None)
        best_text = f"{_short(best.get('label') or best['method'])} ({key} {best[key]:.2f})" if best else "–"
        plot = out_dir / f"{name}.png"
        plot_link = f"[{plot.name}]({plot.name})" if plot.is_file() else "–"
        lines.append(
            f"| {name} | {protocol} | {len(table['rows'])} | {best_text} | [{name}.md]({name}.md) "
            f"| [{name}.csv]({name}.csv) | [{name}.json]({name}.json) | {plot_link} |"
        )
        if plot.is_file():
            plots.append(f"### {name}\n\n![{name}: accuracy vs t2i latency]({plot.name})\n")
    if plots:
        lines += ["", "## Accuracy vs latency", "", *plots]
    index = out_dir / INDEX_FILE
    atomic_write_text(index, "\n".join(lines).rstrip() + "\n")
    return index


def write_leaderboards(
    runs_dir: Path, out_dir: Path, datasets: Sequence[str] | None = None
) -> dict[str, list[Path]]:
    """Rebuild the tables of `datasets` (default: every dataset with results) and the index, under the lock.

    Returns dataset -> [md, csv, json(, png)].
    """
    runs_dir, out_dir = Path(runs_dir), Path(out_dir)
    with leaderboard_lock(out_dir):
        records = find_results(runs_dir)
        names = list(datasets) if datasets is not None else sorted({r["dataset"] for r in records})
        written = {name: _write_tables(build_leaderboard(records, name), out_dir) for name in names}
        write_index(out_dir)
    return written


def write_leaderboard(runs_dir: Path, out_dir: Path, dataset: str) -> list[Path]:
    """Rebuild `out_dir/{dataset}.{md,csv,json}` (and its plot and the index) from every results file."""
    return write_leaderboards(runs_dir, out_dir, [dataset])[dataset][:3]


# ------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `leaderboard` subcommand's options."""
    parser.add_argument("--runs-dir", default="runs", help="where the runs are (default: runs/)")
    parser.add_argument("--out", default="leaderboards", help="where tables go (default: leaderboards/)")
    parser.add_argument(
        "--data", nargs="+", default=None, metavar="DATASET", help="only these datasets (default: all)"
    )


def run(args: argparse.Namespace) -> int:
    """Rebuild the leaderboards and print what was written."""
    from xmodal_bench.errors import UserError

    runs_dir = Path(args.runs_dir)
    if not runs_dir.is_dir():
        raise UserError(f"no runs folder {runs_dir}: run `xmodal-bench bench` or `xmodal-bench sweep` first")
    written = write_leaderboards(runs_dir, Path(args.out), args.data)
    if not written:
        print(f"no results under {runs_dir}; wrote an empty index {Path(args.out) / INDEX_FILE}")
    for dataset, paths in written.items():
        print(f"{dataset}: " + ", ".join(str(p) for p in paths))
    print(f"index: {Path(args.out) / INDEX_FILE}")
    return 0
