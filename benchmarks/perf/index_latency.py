"""Per-query latency of ALADIN's three inference modes on a large random gallery.

    .venv/bin/python benchmarks/perf/index_latency.py                      # 100K items, tiny shapes
    .venv/bin/python benchmarks/perf/index_latency.py --gallery 10000 --dim 512 --image-tokens 196

What is timed is what `xmodal-bench bench` times (`retrieval.evaluation.measure_latency`): a batch
of precomputed query features answered at once, divided by the number of queries (encoding the
query is not included; building the index is not included):
- matching: kNN over matching embeddings [N, dim] through each index backend;
- alignment: the fine score (max over image tokens, mean over words) of each query against every
  gallery item, then top-k (`retrieval.two_stage.exhaustive_search`);
- two_stage: the index's top-K shortlist re-ranked by the fine score (`two_stage_search`).
Both directions: t2i (text queries, gallery of images with `--image-tokens` tokens) and i2t
(image queries, gallery of captions with `--words` words). The random embeddings are a Gaussian
mixture (real embeddings are clustered; on structureless Gaussian data IVF needs far more probes),
so the recall@10 of each approximate backend against exact search is reported too.
Numbers depend on the machine and its load: quote them with the hardware line printed at the end.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch
import torch.nn.functional as F

from xmodal_bench.retrieval.index import build_index
from xmodal_bench.retrieval.two_stage import exhaustive_search, token_fine_scorer, two_stage_search


def clustered(n: int, dim: int, generator: torch.Generator, clusters: int = 1000) -> torch.Tensor:
    centres = torch.randn(clusters, dim, generator=generator)
    points = centres[torch.randint(0, clusters, (n,), generator=generator)]
    return F.normalize(points + 0.5 * torch.randn(n, dim, generator=generator), dim=-1)


def timed(queries: int, device: torch.device, fn, *args, **kwargs) -> float:
    """Milliseconds per query of `fn(*args, **kwargs)` (answering `queries` queries), after a warm-up call."""
    fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    fn(*args, **kwargs)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000.0 * (time.perf_counter() - start) / queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gallery", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64, help="embedding width (xmb-tiny: 64, ViT-B-16: 512)")
    parser.add_argument("--image-tokens", type=int, default=16, help="patches per image (64 px / 16: 16)")
    parser.add_argument("--words", type=int, default=16, help="words per caption")
    parser.add_argument("--queries", type=int, default=200, help="queries timed for matching / two_stage")
    parser.add_argument("--alignment-queries", type=int, default=20, help="queries timed for alignment")
    parser.add_argument("--shortlist", type=int, default=100, help="two_stage K")
    parser.add_argument("--k", type=int, default=10, help="results returned per query")
    parser.add_argument("--backends", default="torch,faiss-flat,faiss-ivf,faiss-hnsw")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    n, d = args.gallery, args.dim
    print(
        f"gallery {n} items, dim {d}, {args.image_tokens} image tokens, {args.words} words; device {device}"
    )
    sides = {}
    for direction in ("t2i", "i2t"):
        gallery = clustered(n, d, g).to(device)
        queries = clustered(args.queries, d, g).to(device)
        sides[direction] = (gallery, queries)
    # alignment tokens: image tokens for the image side, word tokens (+ mask) for the caption side
    image_tokens = F.normalize(torch.randn(n, args.image_tokens, d, generator=g), dim=-1).to(device)
    text_tokens = F.normalize(torch.randn(n, args.words, d, generator=g), dim=-1).to(device)
    text_mask = torch.ones(n, args.words, dtype=torch.uint8, device=device)
    fine = {
        # t2i: query texts are rows of the caption token set, the gallery is the image token set
        "t2i": token_fine_scorer(text_tokens, text_mask, image_tokens, "t2i"),
        "i2t": token_fine_scorer(text_tokens, text_mask, image_tokens, "i2t"),
    }
    rows = torch.arange(args.queries, device=device)
    results: dict = {"config": vars(args), "matching": {}, "two_stage": {}, "alignment": {}, "recall@10": {}}

    for direction, (gallery, queries) in sides.items():
        exact = None
        for backend in args.backends.split(","):
            started = time.perf_counter()
            index = build_index(gallery, backend=backend)
            build_s = time.perf_counter() - started
            found = index.search(queries, 10)[1].cpu()
            if exact is None:
                exact = build_index(gallery, backend="torch").search(queries, 10)[1].cpu()
            recall = sum(len(set(a.tolist()) & set(b.tolist())) for a, b in zip(found, exact, strict=True))
            knn = timed(args.queries, device, index.search, queries, args.k)
            two = timed(
                args.queries,
                device,
                two_stage_search,
                queries,
                rows,
                index,
                fine[direction],
                args.shortlist,
                lam=1.0,
                global_weight=0.0,
                top=args.k,
            )
            key = f"{direction}/{backend}"
            results["matching"][key] = knn
            results["two_stage"][key] = two
            results["recall@10"][key] = recall / (10 * args.queries)
            print(
                f"{direction} {backend:<11} build {build_s:6.1f} s  matching {knn:8.4f} ms/q  "
                f"two_stage(K={args.shortlist}) {two:8.3f} ms/q  recall@10 {recall / (10 * args.queries):.3f}"
            )
        few = rows[: args.alignment_queries]
        align = timed(len(few), device, exhaustive_search, few, fine[direction], args.k)
        results["alignment"][direction] = align
        first = args.backends.split(",")[0]
        ratio = align / results["matching"][f"{direction}/{first}"]
        print(f"{direction} alignment (exhaustive) {align:9.3f} ms/q  = {ratio:.0f}x matching ({first})")

    results["hardware"] = {
        "machine": platform.machine(),
        "processor": platform.processor(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
    }
    print(json.dumps(results["hardware"]))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
