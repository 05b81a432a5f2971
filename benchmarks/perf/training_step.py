"""Training step: samples/s of each method at `tiny` scale, Lightning vs a bare PyTorch loop.

    .venv/bin/python benchmarks/perf/training_step.py                  # clip irra tgdt aladin, CPU
    .venv/bin/python benchmarks/perf/training_step.py --quick          # seconds

Both loops train the same freshly built method (same seed) on the same fixed batch of the
`synth` shape (64x64 images, tiny tokenised captions), so data loading is out of the picture:
- `bare`: `loss = method.training_step(batch, i); loss.backward(); optimizer.step();
  scheduler.step(); optimizer.zero_grad()` with the method's own optimizer and schedule;
- `lightning`: `Trainer.fit` with a loader that yields that batch (no logger, no checkpoints,
  no progress bar, no validation: what Lightning adds to the step itself, logging calls included).
Steps after the warm-up are timed; the two loops alternate, best of the repeats.
Lightning overhead = lightning time per step / bare time per step - 1, in wall time and in CPU
time of the process. One torch thread by default: tiny models' ops are short, and with several
threads on a shared machine every op waits at a barrier for a descheduled thread, which swamps
what is measured here (`--threads 2` on a quiet machine).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import warnings

import torch
from _common import emit, emit_summary, machine, provenance_notes, write_markdown

from xmodal_bench.config import compose
from xmodal_bench.methods.optim import build_optimizer, build_scheduler
from xmodal_bench.registry import create_method, method_sections

METHODS = ("clip", "irra", "tgdt", "aladin")


def build(name: str, batch_size: int):
    parts, sections = method_sections(name)
    overrides = [f"data.train_identities={batch_size}", f"data.train_images={batch_size}"]
    cfg = compose(parts, sections, "synth", "tiny", overrides=overrides)
    torch.manual_seed(0)
    return create_method(cfg), cfg


def fixed_batch(batch_size: int, image_hw=(64, 64)) -> dict:
    import open_clip

    g = torch.Generator().manual_seed(0)
    colours, shapes = ["red", "green", "blue", "yellow"], ["circle", "square", "triangle"]
    texts = [f"a {colours[i % 4]} {shapes[i % 3]} at the top left number {i}" for i in range(batch_size)]
    return {
        "image": torch.randn(batch_size, 3, *image_hw, generator=g),
        "text": open_clip.get_tokenizer("ViT-B-32", context_length=32)(texts),
        "image_index": torch.arange(batch_size),
        "caption_index": torch.arange(batch_size),
        "pid": torch.arange(batch_size),
    }


def bare_loop(name: str, batch: dict, warmup: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of a plain PyTorch loop over the method's training_step."""
    method, cfg = build(name, batch["image"].shape[0])
    method.train()
    method.log = lambda *args, **kwargs: None  # no Trainer: logging is Lightning's job
    method.log_dict = lambda *args, **kwargs: None
    optimizer = build_optimizer(method, cfg.optim)
    scheduler = build_scheduler(optimizer, cfg.optim, warmup + steps, warmup + steps)
    start = (0.0, 0.0)
    for i in range(warmup + steps):
        if i == warmup:
            start = (time.perf_counter(), time.process_time())
        loss = method.training_step(batch, i)
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start[0]) / steps, (time.process_time() - start[1]) / steps


def lightning_loop(name: str, batch: dict, warmup: int, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds per step of `Trainer.fit` on the same batch, from the end of the warm-up."""
    import lightning as L

    method, _ = build(name, batch["image"].shape[0])
    marks: list[tuple[float, float]] = []

    class Clock(L.Callback):
        def on_train_batch_end(self, *args, **kwargs) -> None:
            marks.append((time.perf_counter(), time.process_time()))

    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=warmup + steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[Clock()],
    )
    loader = torch.utils.data.DataLoader([batch] * (warmup + steps), batch_size=None)
    trainer.fit(method, train_dataloaders=loader)
    timed_steps = len(marks) - warmup
    return tuple((marks[-1][j] - marks[warmup - 1][j]) / timed_steps for j in (0, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two methods, two steps (smoke test)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: no barrier waits)")
    parser.add_argument("--out", default="training_step")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.methods, args.batch_size, args.steps, args.warmup, args.repeats = ["clip"], 8, 2, 1, 1
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    info = machine()
    batch = fixed_batch(args.batch_size)
    records = []
    for name in args.methods:
        bare, lightning = (float("inf"),) * 2, (float("inf"),) * 2
        for _ in range(args.repeats):
            bare = min(bare, bare_loop(name, batch, args.warmup, args.steps))
            lightning = min(lightning, lightning_loop(name, batch, args.warmup, args.steps))
        (bare, bare_cpu), (lightning, lightning_cpu) = bare, lightning
        records.append(
            emit(
                {
                    "case": f"train/{name}",
                    "batch_size": args.batch_size,
                    "bare_samples_per_s": round(args.batch_size / bare, 1),
                    "lightning_samples_per_s": round(args.batch_size / lightning, 1),
                    "bare_ms_per_step": round(1000 * bare, 1),
                    "lightning_ms_per_step": round(1000 * lightning, 1),
                    "lightning_overhead_pct": round(100 * (lightning / bare - 1), 1),
                    "lightning_cpu_overhead_pct": round(100 * (lightning_cpu / bare_cpu - 1), 1),
                    "threads": torch.get_num_threads(),
                }
            )
        )
    info_end = machine()
    rows = [
        [
            r["case"].split("/", 1)[1],
            r["batch_size"],
            f"{r['bare_samples_per_s']:,}",
            f"{r['lightning_samples_per_s']:,}",
            f"{r['bare_ms_per_step']} ms",
            f"{r['lightning_ms_per_step']} ms",
            f"{r['lightning_overhead_pct']:+.1f}%",
            f"{r['lightning_cpu_overhead_pct']:+.1f}%",
        ]
        for r in records
    ]
    path = write_markdown(
        args.out,
        "Training step at `tiny` scale (64x64 images), one fixed batch: bare PyTorch loop vs Lightning",
        [
            "method",
            "batch",
            "bare samples/s",
            "Lightning samples/s",
            "bare step",
            "Lightning step",
            "overhead (wall)",
            "overhead (CPU time)",
        ],
        rows,
        [
            *provenance_notes("training_step.py", argv, info, info_end),
            f"{args.steps} timed steps after {args.warmup} warm-up steps, best of {args.repeats} alternating runs.",
        ],
    )
    emit_summary("train/summary", path, info, info_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
