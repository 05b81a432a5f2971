"""Two-stage inference: per-query latency of global, fused (top-K re-rank) and exhaustive fine scoring.

    .venv/bin/python benchmarks/perf/two_stage_latency.py            # galleries of 1K, 5K, 25K images
    .venv/bin/python benchmarks/perf/two_stage_latency.py --quick    # seconds

Text queries against an image gallery (t2i), TGDT's inference: global embeddings [N, D], image
tokens [N, T, D], query word tokens [Q, L, D], all L2-normalised (shapes of a ViT-B/32 at 224 px
with a 256-wide local branch by default). Timed as `xmodal-bench bench` times them
(`retrieval.evaluation.measure_latency`): a batch of precomputed query features answered at once,
divided by the number of queries; encoding the queries is not included.
- `global`: exact top-10 by global cosine (`two_stage.CosineIndex`);
- `fused`: global top-K shortlist (K = 100, TGDT's t2i K) re-scored by s_global + s_fine, top-10
  (`two_stage.two_stage_search`), s_fine = mean over words of the max over image tokens;
- `exhaustive`: s_fine against every gallery image, top-10 (`two_stage.exhaustive_search`).
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F
from _common import emit, emit_summary, fmt_s, machine, provenance_notes, timed, write_markdown

from xmodal_bench.retrieval.two_stage import (
    CosineIndex,
    exhaustive_search,
    token_fine_scorer,
    two_stage_search,
)


def unit(g: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=g), dim=-1)


def measure(gallery: int, args, device: torch.device) -> list[dict]:
    g = torch.Generator().manual_seed(gallery)
    images = unit(g, gallery, args.dim).to(device)
    image_tokens = unit(g, gallery, args.image_tokens, args.dim).to(device)
    queries = F.normalize(images[: args.queries] + 0.5 * unit(g, args.queries, args.dim).to(device), dim=-1)
    words = unit(g, args.queries, args.words, args.dim).to(device)
    mask = torch.ones(args.queries, args.words, dtype=torch.bool, device=device)
    fine = token_fine_scorer(words, mask, image_tokens, "t2i")
    index = CosineIndex(images)
    rows = torch.arange(args.queries, device=device)
    few = rows[: args.exhaustive_queries]
    runs = {
        "global": (args.queries, lambda: index.search(queries, args.top)),
        "fused": (
            args.queries,
            lambda: two_stage_search(queries, rows, index, fine, args.shortlist, lam=1.0, top=args.top),
        ),
        "exhaustive": (len(few), lambda: exhaustive_search(few, fine, args.top)),
    }
    out = []
    for mode, (count, fn) in runs.items():
        wall, cpu, _ = timed(fn, repeats=args.repeats, device=device, warmup=True)
        out.append(
            {
                "case": f"two_stage/{gallery}/{mode}",
                "gallery": gallery,
                "mode": mode,
                "queries_timed": count,
                "ms_per_query": round(1000 * wall / count, 3),
                "cpu_ms_per_query": round(1000 * cpu / count, 3),
            }
        )
    base = out[0]["ms_per_query"]
    for record in out:
        record["x_global"] = round(record["ms_per_query"] / base, 1)
        emit(record)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny galleries (smoke test)")
    parser.add_argument("--galleries", type=int, nargs="+", default=[1_000, 5_000, 25_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--image-tokens", type=int, default=49)
    parser.add_argument("--words", type=int, default=24)
    parser.add_argument("--queries", type=int, default=100, help="queries answered at once (global, fused)")
    parser.add_argument("--exhaustive-queries", type=int, default=4)
    parser.add_argument("--shortlist", type=int, default=100, help="K of the fused mode")
    parser.add_argument("--top", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="two_stage_latency")
    args = parser.parse_args(argv)
    if args.quick:
        args.galleries, args.dim, args.image_tokens, args.words = [200, 400], 32, 8, 6
        args.queries, args.exhaustive_queries, args.shortlist, args.repeats = 8, 2, 20, 1
    device = torch.device(args.device)
    info = machine()
    records = [r for gallery in args.galleries for r in measure(gallery, args, device)]
    info_end = machine()
    rows = [
        [
            f"{r['gallery']:,}",
            r["mode"],
            fmt_s(r["ms_per_query"] / 1000),
            fmt_s(r["cpu_ms_per_query"] / 1000),
            f"{r['x_global']}x",
        ]
        for r in records
    ]
    path = write_markdown(
        args.out,
        f"Two-stage inference (t2i, TGDT-style): per-query latency, K = {args.shortlist}, top {args.top}",
        ["gallery", "mode", "latency / query", "CPU time / query", "vs global"],
        rows,
        [
            *provenance_notes("two_stage_latency.py", argv, info, info_end),
            f"Shapes: dim {args.dim}, {args.image_tokens} image tokens, {args.words} words; {args.queries} queries "
            f"answered at once ({args.exhaustive_queries} for exhaustive); best of {args.repeats} after a warm-up.",
        ],
    )
    emit_summary("two_stage/summary", path, info, info_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
