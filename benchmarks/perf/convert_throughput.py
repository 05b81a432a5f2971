"""Converter throughput: images/s from a dataset as distributed to finished shards + manifest.

    .venv/bin/python benchmarks/perf/convert_throughput.py                      # cuhk and coco, 3000 images
    .venv/bin/python benchmarks/perf/convert_throughput.py --format coco --images 5000 --workers 1 2 4 8

For each format, writes a fake copy in its real layout (`datamodules.converters.samples`) with
realistic image sizes (COCO-like 640x480 JPEGs, ~120 KB; person crops 256x96, ~15 KB), then
times `convert` end to end (annotation parsing, existence checks, reading, decode check, tar
writing, sha256, manifest) for each reader-thread count. Each run starts on files that were just
written, i.e. in the page cache: this measures the converter, not the disk. Prints a markdown
table (and, with --json, the same as JSON), with images per CPU-second (all threads) next to the
wall-clock rate: on a shared machine that is the number that does not depend on the load.
The cuhk sample cycles its folders, so 1 image in 5 is a PNG and 1 in 5 a BMP that is
re-encoded: more than the real CUHK-PEDES has, i.e. a pessimistic figure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from datamodules.converters import convert, engine  # noqa: F401 - engine: import (torch, via webdataset) before timing
from datamodules.converters.samples import write_sample


def _split(n: int) -> dict[str, int]:
    """80 / 10 / 10."""
    return {"train": n - 2 * (n // 10), "val": n // 10, "test": n // 10}


PROFILES = {
    # format -> (image size (h, w), split sizes for `n` images: images for coco, identities x 2 for cuhk)
    "coco": ((480, 640), _split),
    "cuhk": ((256, 96), lambda n: _split(n // 2)),
}


def measure(fmt: str, images: int, workers: list[int], work: Path, repeats: int) -> list[dict]:
    size, splits = PROFILES[fmt]
    source = work / f"src-{fmt}"
    sample = write_sample(fmt, source, sizes=splits(images), image_size=size, distinct_images=64)
    mb = sum((source / i.rel).stat().st_size for i in sample.images) / 2**20
    rows = []
    for n in workers:
        best, cpu = float("inf"), float("inf")
        for _ in range(repeats):
            out = work / f"out-{fmt}"
            shutil.rmtree(out, ignore_errors=True)
            start, start_cpu = time.perf_counter(), time.process_time()
            report = convert(fmt, source, out, workers=n, progress=False)
            best = min(best, time.perf_counter() - start)
            cpu = min(cpu, time.process_time() - start_cpu)
            assert report.images == len(sample.images)
        rows.append(
            {
                "format": fmt,
                "images": len(sample.images),
                "image_mb": round(mb, 1),
                "workers": n,
                "seconds": round(best, 2),
                "images_per_s": round(len(sample.images) / best),
                "images_per_cpu_s": round(len(sample.images) / cpu),
                "mb_per_s": round(mb / best, 1),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--format", nargs="+", choices=sorted(PROFILES), default=["cuhk", "coco"])
    parser.add_argument("--images", type=int, default=3000, help="images per format (default 3000)")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4], help="reader threads to try")
    parser.add_argument("--repeats", type=int, default=1, help="runs per setting; the best is kept")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--json", action="store_true", help="also print the rows as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        rows = [
            r for fmt in args.format for r in measure(fmt, args.images, args.workers, Path(tmp), args.repeats)
        ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average {load:.1f}"
    )
    print("| format | images | MB | reader threads | seconds | images/s | MB/s | images per CPU-second |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['format']} | {r['images']:,} | {r['image_mb']} | {r['workers']} | {r['seconds']} "
            f"| {r['images_per_s']:,} | {r['mb_per_s']} | {r['images_per_cpu_s']:,} |"
        )
    if args.json:
        print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
