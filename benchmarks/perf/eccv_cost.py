"""ECCV Caption / CxC cost: the `coco` protocol alone against coco plus its id metrics (COCO 5K).

    .venv/bin/python benchmarks/perf/eccv_cost.py               # 5K x 25K, dims 512 and 256
    .venv/bin/python benchmarks/perf/eccv_cost.py --dims 512 --repeats 7

Embeddings are random unit vectors on the package's own COCO 5K test ids (each caption = its
image's embedding plus noise, as in `metrics_engine.py`), scored by exact dot product on the CPU.
Each repeat times, one after the other in this process (so all see the same load):
- `coco`: `protocol.metrics(protocol.ranks(gallery))`: 5K and the five 1K folds;
- `eccv`: `protocol.id_metrics(gallery)`: the id checks, both directions' top-K lists, the
  `eccv-caption` package's `compute_all_metrics` and every query's values (for the bootstrap)
  (`coco + eccv` is the sum of the two);
- `lists`: the top-K rows of both directions (`EmbeddingTopK.both`), one pass over the tiles;
- `package`: `compute_all_metrics` alone on ready lists;
- `per-query`: `per_query_values` alone on ready lists;
- `old lists`: the former way (`torch.topk` per block, one matmul pass per direction), as a
  reference for what the one-pass kernel saves.
Reported: the median of the repeats and each case's median ratio to `coco` within a repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from _common import emit, emit_summary, fmt_s, machine, provenance_notes, write_markdown

from xmodal_bench.metrics import Gallery, get_protocol, topk
from xmodal_bench.metrics.eccv import (
    CXC_KS,
    _id_matrix,
    _list_length,
    coco_test_ids,
    embedding_top_k,
    package,
    per_query_values,
)

TARGETS = ("cxc_recalls", "eccv_map_at_r", "eccv_rprecision", "eccv_r1")


def coco_gallery(dim: int, noise: float = 7.0) -> Gallery:
    """Random paired unit embeddings on the COCO 5K test ids, captions in the package's order."""
    images, captions = coco_test_ids()
    truth = package().coco_gts["t2i"]
    row = {int(i): r for r, i in enumerate(images)}
    owner = torch.tensor([row[truth[int(c)][0]] for c in captions])
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(len(images), dim, generator=g), dim=1)
    txt = F.normalize(img[owner] + noise * torch.randn(len(captions), dim, generator=g) / dim**0.5, dim=1)
    return Gallery(owner, img, txt, image_ids=images, caption_ids=captions)


def cases(gallery: Gallery) -> dict:
    """name -> a function timing one case."""
    coco = get_protocol("coco")
    images, captions = np.asarray(gallery.image_ids), np.asarray(gallery.caption_ids)
    k_i2t, k_t2i = _list_length("i2t"), _list_length("t2i")
    search = embedding_top_k(gallery.image_emb, gallery.text_emb)
    found_i2t, found_t2i = search.both(k_i2t, k_t2i)
    ids_i2t = _id_matrix(found_i2t.numpy(), captions, k_i2t)
    ids_t2i = _id_matrix(found_t2i.numpy(), images, k_t2i)
    i2t = dict(zip(images.tolist(), ids_i2t.tolist(), strict=True))
    t2i = dict(zip(captions.tolist(), ids_t2i.tolist(), strict=True))

    def run_package():
        with contextlib.redirect_stderr(io.StringIO()):
            package().compute_all_metrics(i2t, t2i, target_metrics=TARGETS, Ks=CXC_KS, verbose=False)

    def old_lists():
        topk.torch_top_k(gallery.image_emb, gallery.text_emb, k_i2t)
        topk.torch_top_k(gallery.text_emb, gallery.image_emb, k_t2i)

    return {
        "coco": lambda: coco.metrics(coco.ranks(gallery)),
        "eccv": lambda: coco.id_metrics(gallery),
        "lists": lambda: search.both(k_i2t, k_t2i),
        "package": run_package,
        "per-query": lambda: per_query_values(ids_i2t, ids_t2i, images, captions),
        "old lists": old_lists,
    }


def measure(dim: int, repeats: int) -> list[dict]:
    """One record per case: median seconds and median ratio to `coco` over the repeats."""
    fns = cases(coco_gallery(dim))
    for fn in fns.values():  # warm-up: kernel build, allocator, package import
        fn()
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            seconds[name].append(time.perf_counter() - start)
    seconds["coco + eccv"] = [a + b for a, b in zip(seconds["coco"], seconds["eccv"], strict=True)]
    records = []
    for name, values in seconds.items():
        ratios = [v / c for v, c in zip(values, seconds["coco"], strict=True)]
        record = {
            "case": f"eccv/{dim}/{name}",
            "dim": dim,
            "seconds": round(statistics.median(values), 4),
            "x_coco": round(statistics.median(ratios), 2),
            "all_seconds": [round(v, 4) for v in values],
        }
        records.append(emit(record))
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", nargs="+", type=int, default=[512, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="eccv_cost", help="results/<out>.md")
    args = parser.parse_args(argv)
    info = machine()
    records = [r for dim in args.dims for r in measure(dim, args.repeats)]
    info_end = machine()
    rows = [
        [f"5,000 x 25,000 x {r['dim']}", r["case"].split("/")[-1], fmt_s(r["seconds"]), f"{r['x_coco']}x"]
        for r in records
    ]
    path = write_markdown(
        args.out,
        "ECCV Caption / CxC metrics: cost against the coco protocol (COCO 5K, exact, CPU)",
        ["images x captions x dim", "case", "time (median)", "vs coco (median ratio)"],
        rows,
        [
            *provenance_notes("eccv_cost.py", argv, info, info_end),
            "coco = 5K and 1K ranks and metrics; eccv = `id_metrics` (id checks, both directions' "
            "top-K lists in one kernel pass, the package, per-query values); package = "
            "`compute_all_metrics` on ready lists; per-query = `per_query_values` on ready lists; old lists = one `torch.topk` pass per direction (before the kernel). "
            f"Median of {args.repeats} repeats, each case timed right after the others.",
        ],
    )
    emit_summary("eccv/summary", path, info, info_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
