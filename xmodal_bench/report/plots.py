"""The accuracy-vs-latency plot of a leaderboard: one labelled point per row.

y = the protocol's headline accuracy (rSum for caption sets, 5K rSum for COCO, R@1 for person
sets), x = text-to-image latency per query in ms (log scale): up and left is better. Rows
averaged over seeds get error bars (± one std). Drawn with matplotlib's Agg backend (no display
needed) and written atomically; the PNG carries no software version, so it only changes when the
numbers do.
"""

from __future__ import annotations

import io
from pathlib import Path

from xmodal_bench.atomic import atomic_write_bytes
from xmodal_bench.metrics.protocols import get_protocol
from xmodal_bench.report.tables import Leaderboard

LATENCY_KEY = "t2i_ms"
MAX_LABEL = 40


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "…"


def plot_accuracy_latency(board: Leaderboard, path: Path) -> Path | None:
    """Write `path` (PNG) for `board`; None (nothing written) when no row has both figures."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    protocol = get_protocol(board.protocol)
    metric = protocol.headline
    points = [
        (row, row.mean(LATENCY_KEY), row.mean(metric))
        for row in board.rows
        if row.mean(LATENCY_KEY) and row.mean(metric) is not None
    ]
    if not points:
        return None
    figure = Figure(figsize=(7.0, 4.5), dpi=120)  # no pyplot: no global state, thread safe
    axes = figure.subplots()
    for row, latency, accuracy in points:
        marker = "o" if row.primary else "s"
        axes.errorbar(
            latency,
            accuracy,
            yerr=row.std(metric) or None,
            xerr=row.std(LATENCY_KEY) or None,
            fmt=marker,
            capsize=3,
            markersize=6,
        )
        axes.annotate(
            _short(row.label), (latency, accuracy), textcoords="offset points", xytext=(5, 4), fontsize=8
        )
    axes.set_xscale("log")
    axes.set_xlabel("text-to-image latency per query (ms, log scale)")
    info = protocol.info(metric)
    title = info.title if info is not None else metric
    axes.set_ylabel(title)
    axes.set_title(f"{board.dataset}: {title} vs latency ({board.protocol} protocol)")
    axes.grid(True, which="both", alpha=0.3)
    axes.margins(x=0.25, y=0.15)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", metadata={"Software": None})
    atomic_write_bytes(path, buffer.getvalue())
    return path
