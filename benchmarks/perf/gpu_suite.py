"""GPU suite: what a user training on one GPU needs to know, in one run of at most 8 minutes.

    bash benchmarks/perf/gpu_suite.sh                 # on the GPU machine (calls this file)
    .venv/bin/python benchmarks/perf/gpu_suite.py --smoke   # CPU, toy sizes (the test suite runs it)

Cases (one JSON line each, then a markdown table in benchmarks/perf/results/gpu_suite.md):
- `train/<method>/<size>`: bf16 (autocast) training throughput of every method at `base` scale
  (ViT-B/16; random weights: throughput does not depend on them, and nothing is downloaded) on
  synthetic batches at the real image sizes: 224x224 (`coco`) and 384x128 (`cuhk`), at each
  method's configured batch size for that dataset. A bare loop over the method's own
  `training_step`, optimizer and schedule (Lightning adds 1-6% per step, see training_step.py).
  IRRA on 384x128 runs at batch 64 and reports the projected GPU-hours for 60 CUHK-PEDES epochs
  (68,126 training captions).
- `eval/25k_x_125k`: the caption protocol's exact ranks at 25,000 images x 125,000 captions x
  512 on the GPU (`score_dtype="auto"`: bf16), against one bare matmul of the same shape/dtype.
- `faiss/...`: a flat inner-product index on the GPU over the 125,000 captions, build and search
  (25,000 queries, k = 10); skipped cleanly when faiss has no GPU support (`pip install
  '.[gpu]'`).
- `loader/<size>`: images per second one loader worker decodes, resizes and normalises (JPEGs at
  the source sizes: 640x480 -> 224x224, 96x256 -> 384x128), and the workers needed to keep the
  fastest method's training fed.
A case that would overrun `--budget-s` is skipped with a reason, so the script always finishes.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from _common import emit, emit_summary, machine, provenance_notes, write_markdown

CUHK_TRAIN_CAPTIONS = 68_126
CUHK_TRAIN_IDENTITIES = 11_003
CUHK_TRAIN_IMAGES = 34_054
IRRA_EPOCHS = 60
METHODS = ("clip", "irra", "tgdt", "aladin", "clip+bcls")
SIZES = {"224": ("coco", (480, 640)), "384x128": ("cuhk", (256, 96))}  # dataset, source JPEG (H, W)


class Suite:
    """Runs cases in order within a time budget; collects the records."""

    def __init__(self, budget_s: float) -> None:
        self.started = time.perf_counter()
        self.budget_s = budget_s
        self.records: list[dict[str, Any]] = []

    def left(self) -> float:
        return self.budget_s - (time.perf_counter() - self.started)

    def run(self, case: str, needs_s: float, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        if self.left() < needs_s:
            record = {
                "case": case,
                "skipped": f"time budget ({self.left():.0f} s left, needs ~{needs_s:.0f} s)",
            }
        else:
            try:
                record = {"case": case, **fn()}
            except Exception as exc:  # one failing case must not lose the others' figures
                record = {"case": case, "error": f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"}
        self.records.append(emit(record))
        return record


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- training ------------------------------------------------------------------------------------


def build_method(spec: str, dataset: str, scale: str, device: torch.device, batch: int | None) -> tuple:
    from xmodal_bench.registry import create_method
    from xmodal_bench.run.request import RunRequest

    overrides = [
        "backbone.pretrained=none",
        f"data.train_identities={CUHK_TRAIN_IDENTITIES}",
        f"data.train_images={CUHK_TRAIN_IMAGES}",
    ]
    if batch is not None:
        overrides.append(f"data.batch_size={batch}")
    if spec.endswith("+bcls"):
        overrides.append("bcls.continuous=none")  # pseudo-labels need a dataset's caption store
    cfg = RunRequest(spec, dataset, scale, overrides=tuple(overrides)).compose()
    torch.manual_seed(0)
    method = create_method(cfg).to(device)
    return method, cfg


def synthetic_batch(method, cfg, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch at the configured size and image size; captions of realistic length."""
    n, (h, w) = int(cfg.data.batch_size), tuple(cfg.data.image_size)
    g = torch.Generator().manual_seed(0)
    words = ["woman", "man", "wearing", "a", "red", "blue", "black", "jacket", "shirt", "bag", "with"]
    texts = [" ".join(words[(i + j) % len(words)] for j in range(12 + i % 10)) for i in range(n)]
    return {
        "image": torch.randn(n, 3, h, w, generator=g).to(device),
        "text": method.backbone.tokenizer()(texts).to(device),
        "image_index": torch.arange(n, device=device),
        "caption_index": torch.arange(n, device=device),
        "pid": torch.randint(0, CUHK_TRAIN_IDENTITIES, (n,), generator=g).to(device),
    }


def train_case(
    spec: str, dataset: str, scale: str, device: torch.device, warmup: int, steps: int, batch: int | None
) -> dict[str, Any]:
    from xmodal_bench.methods.optim import build_optimizer, build_scheduler

    method, cfg = build_method(spec, dataset, scale, device, batch)
    method.train()
    method.log = lambda *args, **kwargs: None  # no Trainer: logging is Lightning's job
    method.log_dict = lambda *args, **kwargs: None
    optimizer = build_optimizer(method, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, warmup + steps, warmup + steps)
    data = synthetic_batch(method, cfg, device)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    started = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            started = time.perf_counter()
        with autocast:
            loss = method.training_step(data, i)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    _sync(device)
    per_step = (time.perf_counter() - started) / steps
    n = int(cfg.data.batch_size)
    out = {
        "method": spec,
        "image_size": list(cfg.data.image_size),
        "batch_size": n,
        "precision": "bf16-autocast" if device.type == "cuda" else "fp32",
        "samples_per_s": round(n / per_step, 1),
        "ms_per_step": round(1000 * per_step, 1),
        "loss_finite": bool(torch.isfinite(loss.detach()).item()),
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if spec == "irra" and dataset == "cuhk":
        out["cuhk_60_epochs_gpu_hours"] = round(IRRA_EPOCHS * CUHK_TRAIN_CAPTIONS / (n / per_step) / 3600, 2)
    del method, optimizer, data
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


# -- evaluation ----------------------------------------------------------------------------------


def paired(images: int, captions: int, dim: int, device: torch.device) -> tuple[torch.Tensor, ...]:
    g = torch.Generator(device=device).manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(images, dim, device=device, generator=g), dim=-1)
    owner = torch.arange(captions, device=device) * images // captions
    noise = 7.0 * torch.randn(captions, dim, device=device, generator=g) / math.sqrt(dim)
    txt = torch.nn.functional.normalize(img[owner] + noise, dim=-1)
    return img, txt, owner


def best_of(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        _sync(device)
        started = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - started)
    return min(times)


def eval_case(images: int, captions: int, dim: int, device: torch.device, repeats: int) -> dict[str, Any]:
    from xmodal_bench.metrics import caption_ranks, resolve_score_dtype

    img, txt, owner = paired(images, captions, dim, device)
    dtype = resolve_score_dtype("auto", device)
    a, b = img.to(dtype), txt.to(dtype)
    caption_ranks(img[:64], txt[:320], owner[:320], score_dtype="auto")  # warm-up (kernel build)
    matmul = best_of(lambda: a @ b.T, device, repeats)
    a = b = None  # free the inputs of the bare matmul
    ours = best_of(lambda: caption_ranks(img, txt, owner, score_dtype="auto"), device, repeats)
    i2t, t2i = caption_ranks(img, txt, owner, score_dtype="auto")
    return {
        "shape": [images, captions, dim],
        "score_dtype": str(dtype).replace("torch.", ""),
        "matmul_s": round(matmul, 4),
        "ours_s": round(ours, 4),
        "vs_matmul": round(ours / matmul, 3),
        "i2t_r1": round(float((i2t < 1).double().mean() * 100), 2),
        "t2i_r1": round(float((t2i < 1).double().mean() * 100), 2),
    }


def faiss_case(items: int, queries: int, dim: int, device: torch.device) -> dict[str, Any]:
    try:
        import faiss
    except ImportError:
        return {"skipped": "faiss is not installed"}
    gpu = device.type == "cuda"
    if gpu and not (hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0):
        return {"skipped": "faiss has no GPU support here (install the gpu extra: faiss-gpu-cu12)"}
    img, txt, _ = paired(queries, items, dim, torch.device("cpu"))
    gallery, query = txt.numpy().astype(np.float32), img.numpy().astype(np.float32)
    started = time.perf_counter()
    index = faiss.IndexFlatIP(dim)
    if gpu:
        resources = faiss.StandardGpuResources()
        index = faiss.index_cpu_to_gpu(resources, torch.cuda.current_device(), index)
    index.add(gallery)
    build = time.perf_counter() - started
    started = time.perf_counter()
    _, found = index.search(query, 10)
    search = time.perf_counter() - started
    return {
        "index": "flat-ip" + ("-gpu" if gpu else "-cpu"),
        "items": items,
        "queries": queries,
        "dim": dim,
        "build_s": round(build, 4),
        "search_s": round(search, 4),
        "ms_per_query": round(1000 * search / queries, 4),
        "found": int(found.shape[0]),
    }


# -- loading -------------------------------------------------------------------------------------


def loader_case(size: str, images: int, feed_samples_per_s: float | None) -> dict[str, Any]:
    from PIL import Image

    from datamodules.transforms import eval_transform

    dataset, source_hw = SIZES[size]
    target = (224, 224) if size == "224" else (384, 128)
    rng = np.random.default_rng(0)
    payloads = []
    for _ in range(min(images, 16)):
        buffer = io.BytesIO()
        pixels = rng.integers(0, 255, (*source_hw, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
        payloads.append(buffer.getvalue())
    transform = eval_transform(target)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one worker: one thread
    try:
        started = time.perf_counter()
        for i in range(images):
            with Image.open(io.BytesIO(payloads[i % len(payloads)])) as image:
                transform(image.convert("RGB"))
        per_worker = images / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    out = {"dataset": dataset, "source_hw": list(source_hw), "image_hw": list(target)}
    out["images_per_s_per_worker"] = round(per_worker, 1)
    if feed_samples_per_s:
        out["feeds_samples_per_s"] = round(feed_samples_per_s, 1)
        out["workers_needed"] = math.ceil(feed_samples_per_s / per_worker)
    return out


# -- the report ----------------------------------------------------------------------------------


def table_rows(records: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for r in records:
        if "skipped" in r or "error" in r:
            rows.append([r["case"], "-", r.get("skipped") or r.get("error", "")])
            continue
        kind = r["case"].split("/", 1)[0]
        if kind == "train":
            text = f"{r['samples_per_s']:,} samples/s (batch {r['batch_size']}, {r['ms_per_step']} ms/step)"
            extra = (
                f"60 CUHK-PEDES epochs: {r['cuhk_60_epochs_gpu_hours']} GPU-h"
                if "cuhk_60_epochs_gpu_hours" in r
                else ""
            )
            extra += f" peak {r['peak_memory_gib']} GiB" if "peak_memory_gib" in r else ""
        elif kind == "eval":
            text = f"{r['ours_s']} s vs matmul {r['matmul_s']} s: {r['vs_matmul']}x"
            extra = f"{r['score_dtype']}, R@1 i2t {r['i2t_r1']} t2i {r['t2i_r1']}"
        elif kind == "faiss":
            text = f"build {r['build_s']} s, search {r['search_s']} s ({r['ms_per_query']} ms/query)"
            extra = f"{r['index']}, {r['items']:,} items"
        else:
            text = f"{r['images_per_s_per_worker']} img/s per worker"
            extra = (
                f"{r['workers_needed']} workers for {r['feeds_samples_per_s']:,} samples/s"
                if "workers_needed" in r
                else ""
            )
        rows.append([r["case"], text, extra.strip()])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, toy sizes, seconds (the test suite's run)")
    parser.add_argument("--device", default=None, help="default: cuda when available (--smoke: cpu)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting cases after this")
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per case")
    parser.add_argument("--out", default="gpu_suite")
    args = parser.parse_args(argv)
    logging.getLogger("lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device or ("cpu" if args.smoke or not torch.cuda.is_available() else "cuda"))
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    scale, warmup, steps = ("tiny", 1, 1) if args.smoke else ("base", 3, args.steps)
    eval_shape = (200, 1_000, 32) if args.smoke else (25_000, 125_000, 512)
    faiss_shape = (2_000, 100, 32) if args.smoke else (125_000, 25_000, 512)
    loader_images = 8 if args.smoke else 200
    info = machine()
    suite = Suite(args.budget_s)
    train_s = 5 if args.smoke else 25  # rough cost of one training case (build + steps)
    for size, (dataset, _) in SIZES.items():
        for spec in args.methods:
            batch = 64 if spec == "irra" and dataset == "cuhk" else None
            if args.smoke:
                batch = 8
            suite.run(
                f"train/{spec}/{size}",
                train_s,
                lambda spec=spec, dataset=dataset, batch=batch: train_case(
                    spec, dataset, scale, device, warmup, steps, batch
                ),
            )
    suite.run("eval/" + "x".join(str(x) for x in eval_shape), 5 if args.smoke else 60,
              lambda: eval_case(*eval_shape, device, 1 if args.smoke else 3))  # fmt: skip
    suite.run("faiss/flat", 5 if args.smoke else 40, lambda: faiss_case(*faiss_shape, device))
    for size in SIZES:
        fed = [r["samples_per_s"] for r in suite.records if r["case"].startswith("train/")
               and r["case"].endswith("/" + size) and "samples_per_s" in r]  # fmt: skip
        suite.run(f"loader/{size}", 5 if args.smoke else 20,
                  lambda size=size, fed=fed: loader_case(size, loader_images, max(fed) if fed else None))  # fmt: skip
    info_end = machine()
    notes = [
        *provenance_notes("gpu_suite.py", argv, info, info_end),
        f"Device {device}; scale {scale}; {steps} timed steps after {warmup} warm-up; "
        f"{time.perf_counter() - suite.started:.0f} s in all.",
    ]
    if args.smoke:
        notes.append("Smoke run on toy sizes: checks that the suite runs, not how fast anything is.")
    table = write_markdown(
        args.out, "GPU suite", ["case", "result", "notes"], table_rows(suite.records), notes
    )
    emit_summary("gpu/summary", table, info, info_end)
    failed = [r["case"] for r in suite.records if "error" in r]
    if failed:
        print(f"failed cases: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
