"""Metrics engine: time and peak memory of the caption protocol against the ways others compute it.

    .venv/bin/python benchmarks/perf/metrics_engine.py                 # COCO-5K, 1K x 5K, 100K x 500K
    .venv/bin/python benchmarks/perf/metrics_engine.py --big-dim 512   # the 100K case at full width
    .venv/bin/python benchmarks/perf/metrics_engine.py --quick         # seconds: tiny shapes

Embeddings are random but paired like a trained model's (each caption = its image's embedding
plus noise, normalised; at 5K x 25K: i2t R@1 65, t2i R@1 33, about zero-shot CLIP on COCO). Cases:
- `matmul`: one bare `img @ txt.T` in the same process: the limit every exact method pays.
- `ours`: `xmodal_bench.metrics.caption_retrieval`: both directions, R@1/5/10, medr, meanr, exact
  ranks, from one pass over the score matrix in cache-sized tiles.
- `argsort`: the full score matrix, argsorted along each direction (open_clip's eval style).
- `clip_benchmark`: the full score matrix, a dense positive mask, and per batch of 64 queries
  top-k + one-hot for each k (LAION CLIP_benchmark's `zeroshot_retrieval`); recalls only.
- `torchmetrics`: `RetrievalHitRate` for k = 1, 5, 10 on every (query, item) pair, one direction
  (text->image), on the 1K x 5K shape only (it stores every pair).
The 100K x 500K case runs `ours` only (its score matrix alone would be 186 GiB in fp32); its
`matmul` time is extrapolated from timing a slice of the rows against all captions.
The recalls of every method are compared with ours (`agrees`). `ours` runs `--repeats` times (best
kept), each run next to a bare matmul so that both see the same load; the slow baselines run once.
"""

from __future__ import annotations

import argparse
import math
import sys

import torch
import torch.nn.functional as F
from _common import (
    PeakMemory,
    emit,
    emit_summary,
    fmt_s,
    machine,
    provenance_notes,
    timed,
    write_markdown,
)

from xmodal_bench.metrics import caption_retrieval

KS = (1, 5, 10)
SHAPES = {
    # name: (images, captions, dim)
    "coco5k": (5_000, 25_000, 512),
    "1k": (1_000, 5_000, 512),
    "100k": (100_000, 500_000, 128),
}
QUICK = {"coco5k": (60, 300, 16), "1k": (40, 200, 16), "100k": (300, 1_500, 16)}


def paired_embeddings(images: int, captions: int, dim: int, device: torch.device, noise: float = 7.0):
    """(images [N, D], captions [M, D], owner [M]): M / N captions per image, in image order."""
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(images, dim, generator=g), dim=-1)
    owner = torch.arange(captions) * images // captions
    txt = torch.empty(captions, dim)
    for start in range(0, captions, 65_536):  # in slices: no full-size temporaries
        stop = min(start + 65_536, captions)
        block = img[owner[start:stop]] + noise * torch.randn(stop - start, dim, generator=g) / math.sqrt(dim)
        txt[start:stop] = F.normalize(block, dim=-1)
    return img.to(device), txt.to(device), owner.to(device)


def recalls(metrics: dict) -> dict:
    return {k: round(v, 6) for k, v in metrics.items() if "_r" in k and k != "rsum"}


# -- the ways to compute it ----------------------------------------------------------------------


def ours(img, txt, owner, dtype=torch.float32) -> dict:
    return caption_retrieval(img, txt, owner, score_dtype=dtype)


def bare_matmul(img, txt, dtype=torch.float32):
    return img.to(dtype) @ txt.to(dtype).T


def argsort_way(img, txt, owner) -> dict:
    """Full matrix, full argsort per direction, positions of the positives (stable sort)."""
    scores = img @ txt.T
    num_images = img.shape[0]
    order = torch.argsort(scores, dim=1, descending=True, stable=True)  # [N, M] caption ids, best first
    own = owner[order] == torch.arange(num_images, device=img.device)[:, None]
    i2t = own.int().argmax(1)  # first own caption's position
    del order, own
    order = torch.argsort(scores.T, dim=1, descending=True, stable=True)  # [M, N]
    t2i = (order == owner[:, None]).int().argmax(1)
    return _recalls_from_ranks(i2t, t2i)


def _recalls_from_ranks(i2t, t2i) -> dict:
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in KS:
            out[f"{name}_r{k}"] = float((ranks < k).double().mean() * 100)
    return out


def clip_benchmark_way(img, txt, owner, batch_size: int = 64) -> dict:
    """Written after CLIP_benchmark's zeroshot_retrieval: dense mask, per-batch top-k one-hot."""
    scores = txt @ img.T  # [M, N]
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(scores.shape[0]), owner] = True

    def hit_rate(s, pos, k):
        hits = []
        for start in range(0, s.shape[0], batch_size):
            block, mask = s[start : start + batch_size], pos[start : start + batch_size]
            top = torch.topk(block, k, dim=1).indices
            onehot = F.one_hot(top, num_classes=block.shape[1])  # [b, k, items] int64
            found = (onehot * mask[:, None, :]).sum(dim=(1, 2))
            hits.append((found / mask.sum(1)) > 0)
        return float(torch.cat(hits).float().mean() * 100)

    out = {}
    for k in KS:
        out[f"i2t_r{k}"] = hit_rate(scores.T, positive.T, k)
        out[f"t2i_r{k}"] = hit_rate(scores, positive, k)
    return out


def torchmetrics_way(img, txt, owner) -> dict:
    """RetrievalHitRate (text->image) on shifted scores: it ignores positives scoring <= 0."""
    from torchmetrics.retrieval import RetrievalHitRate

    scores = (txt @ img.T + 2.0).flatten()
    target = torch.zeros(txt.shape[0], img.shape[0], dtype=torch.bool)
    target[torch.arange(txt.shape[0]), owner] = True
    indexes = torch.arange(txt.shape[0])[:, None].expand(-1, img.shape[0]).flatten()
    out = {}
    for k in KS:
        metric = RetrievalHitRate(top_k=k)
        metric.update(scores, target.flatten(), indexes)
        out[f"t2i_r{k}"] = float(metric.compute()) * 100
    return out


# -- cases ---------------------------------------------------------------------------------------


def compare(shape: str, dims: tuple, methods: list[str], repeats: int, device: torch.device) -> list[dict]:
    """Time `methods` on one shape, the bare matmul between them; ratios to the best matmul time."""
    img, txt, owner = paired_embeddings(*dims, device)
    runs = {
        "ours": lambda: ours(img, txt, owner),
        "argsort": lambda: argsort_way(img, txt, owner),
        "clip_benchmark": lambda: clip_benchmark_way(img, txt, owner),
        "torchmetrics": lambda: torchmetrics_way(img, txt, owner),
    }
    matmul_s, matmul_cpu, matmul_mem = float("inf"), float("inf"), 0.0
    records, reference = [], None
    for name in methods:
        seconds, cpu, mem, result = float("inf"), float("inf"), 0.0, None
        for _ in range(repeats if name == "ours" else 1):  # the baselines are slow: once
            with PeakMemory(device) as peak:
                t, c, _ = timed(lambda: bare_matmul(img, txt), device=device)
            matmul_s, matmul_cpu, matmul_mem = min(matmul_s, t), min(matmul_cpu, c), max(matmul_mem, peak.mib)
            with PeakMemory(device) as peak:
                t, c, result = timed(runs[name], device=device)
            seconds, cpu, mem = min(seconds, t), min(cpu, c), max(mem, peak.mib)
        if name == "ours":
            reference = recalls(result)
        agrees = None
        if reference is not None and name != "ours":
            agrees = all(abs(reference[k] - v) < 1e-3 for k, v in recalls(result).items())
        records.append(
            {
                "case": f"metrics/{shape}/{name}",
                "images": dims[0],
                "captions": dims[1],
                "dim": dims[2],
                "directions": 1 if name == "torchmetrics" else 2,
                "seconds": round(seconds, 4),
                "cpu_seconds": round(cpu, 4),
                "peak_mib": mem,
                "agrees_with_ours": agrees,
                "r1": {k: round(v, 2) for k, v in recalls(result).items() if k.endswith("_r1")},
            }
        )
    for record in records:
        record["x_matmul"] = round(record["seconds"] / matmul_s, 2)
        record["x_matmul_cpu"] = round(record["cpu_seconds"] / matmul_cpu, 2)
    base = {
        "case": f"metrics/{shape}/matmul",
        "images": dims[0],
        "captions": dims[1],
        "dim": dims[2],
        "directions": 0,
        "seconds": round(matmul_s, 4),
        "cpu_seconds": round(matmul_cpu, 4),
        "peak_mib": matmul_mem,
        "x_matmul": 1.0,
        "x_matmul_cpu": 1.0,
    }
    return [emit(base), *[emit(r) for r in records]]


def big(dims: tuple, device: torch.device, sample_rows: int) -> list[dict]:
    """Ours on a matrix far too large to hold; the bare matmul time extrapolated from row slices."""
    img, txt, owner = paired_embeddings(*dims, device)
    rows = min(sample_rows, dims[0])
    slices = [0, dims[0] // 2] if dims[0] >= 2 * rows else [0]
    samples = [timed(lambda s=s: bare_matmul(img[s : s + rows], txt), device=device) for s in slices]
    matmul_s = min(t for t, _, _ in samples) * dims[0] / rows
    matmul_cpu = min(c for _, c, _ in samples) * dims[0] / rows
    with PeakMemory(device) as peak:
        seconds, cpu, result = timed(lambda: ours(img, txt, owner), device=device)
    return [
        emit(
            {
                "case": "metrics/100k/matmul (extrapolated)",
                "images": dims[0],
                "captions": dims[1],
                "dim": dims[2],
                "directions": 0,
                "seconds": round(matmul_s, 2),
                "cpu_seconds": round(matmul_cpu, 2),
                "peak_mib": round(4 * dims[0] * dims[1] / 2**20, 1),  # what holding it would take
                "x_matmul": 1.0,
                "x_matmul_cpu": 1.0,
                "sampled_rows": rows,
            }
        ),
        emit(
            {
                "case": "metrics/100k/ours",
                "images": dims[0],
                "captions": dims[1],
                "dim": dims[2],
                "directions": 2,
                "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu, 2),
                "peak_mib": peak.mib,
                "x_matmul": round(seconds / matmul_s, 2),
                "x_matmul_cpu": round(cpu / matmul_cpu, 2),
                "r1": {k: round(v, 2) for k, v in recalls(result).items() if k.endswith("_r1")},
            }
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny shapes (smoke test, seconds)")
    parser.add_argument("--cases", nargs="+", choices=sorted(SHAPES), default=["coco5k", "1k", "100k"])
    parser.add_argument("--big-dim", type=int, default=None, help="embedding width of the 100K case")
    parser.add_argument("--repeats", type=int, default=None, help="runs of ours (best kept; baselines: 1)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the 100K case then fits on 24 GiB)")
    parser.add_argument("--out", default="metrics_engine", help="results/<out>.md")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    shapes = dict(QUICK if args.quick else SHAPES)
    if args.big_dim:
        shapes["100k"] = (*shapes["100k"][:2], args.big_dim)
    repeats = args.repeats or (1 if args.quick else 3)
    info = machine()
    records = []
    if "coco5k" in args.cases:
        records += compare("coco5k", shapes["coco5k"], ["ours", "argsort", "clip_benchmark"], repeats, device)
    if "1k" in args.cases:
        records += compare("1k", shapes["1k"], ["ours", "torchmetrics"], repeats, device)
    if "100k" in args.cases:
        records += big(shapes["100k"], device, sample_rows=25 if args.quick else 500)
    info_end = machine()
    rows = [
        [
            r["case"].split("/", 1)[1],
            f"{r['images']:,} x {r['captions']:,} x {r['dim']}",
            r["directions"],
            fmt_s(r["seconds"]),
            f"{r['x_matmul']}x",
            f"{r['x_matmul_cpu']}x",
            f"{r['peak_mib']:,.0f} MiB",
            {None: "", True: "yes", False: "NO"}[r.get("agrees_with_ours")],
        ]
        for r in records
    ]
    path = write_markdown(
        args.out,
        "Metrics engine: caption protocol (R@1/5/10, medr, meanr) on paired random embeddings",
        [
            "case",
            "images x captions x dim",
            "directions",
            "time",
            "vs bare matmul",
            "CPU time vs matmul",
            "peak memory",
            "same R@K",
        ],
        rows,
        [
            *provenance_notes("metrics_engine.py", argv, info, info_end),
            "Peak memory = resident memory above the start of each case; the 100K matmul row shows what "
            "its score matrix alone would take. Time: best of the repeats.",
        ],
    )
    emit_summary("metrics/summary", path, info, info_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
