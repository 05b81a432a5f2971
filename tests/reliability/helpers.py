"""Shared pieces of the reliability tests: bench command lines on the tiny fixture, shard surgery."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datamodules.manifest import VERIFIED_NAME, file_sha256

CAPTION_METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "i2t_medr", "t2i_medr")
TINY_BENCH = ["data.batch_size=16", "data.eval_batch_size=16", "data.workers=0", "eval.latency_queries=20"]


def bench_argv(
    root: Path, out: Path, dataset: str = "synth", *extra: str, params: dict | None = None
) -> list[str]:
    """`xmodal-bench bench` arguments for a one-epoch clip run on the tiny fixture."""
    synth = [f"data.synthetic.{k}={v}" for k, v in (params or {}).items()]
    return [
        "bench", "--method", "clip", "--data", dataset, "--data-root", str(root),
        "--max-epochs", "1", "--runs-dir", str(out / "runs"), "--leaderboards-dir", str(out / "boards"),
        *TINY_BENCH, *synth, *extra,
    ]  # fmt: skip


def results_files(out: Path) -> list[Path]:
    return sorted((out / "runs").glob("*/*/*/results.json"))


def assert_one_line_error(code: int, err: str, pattern: str) -> str:
    """Exit 2, a single stderr line matching `pattern`, no traceback; returns the line."""
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def copy_as(src_root: Path, dataset: str, dst_root: Path, name: str) -> Path:
    """Copy `src_root/dataset` to `dst_root/name` (a converted-looking set: no regeneration)."""
    target = dst_root / name
    shutil.copytree(src_root / dataset, target)
    manifest_file = target / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    manifest["dataset"] = name
    manifest["command"] = f"xmodal-bench data convert {name} --source DIR --out {dst_root}"
    manifest["generator"] = None
    manifest_file.write_text(json.dumps(manifest))
    return target


def rewrite_shard(path: Path, change: Callable[[str, bytes], bytes | None]) -> None:
    """Rewrite a tar shard member by member: `change(name, data)` returns new bytes (None = keep)."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            new = change(member.name, data)
            data = data if new is None else new
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    path.write_bytes(buffer.getvalue())


def refresh_manifest(dataset_dir: Path) -> dict[str, Any]:
    """Make the manifest agree with the shards as they are now (sizes, sha256), as a converter that
    wrote the bad bytes would have: only the reader can then notice."""
    manifest_file = dataset_dir / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            path = dataset_dir / split / shard["name"]
            shard["size"], shard["sha256"] = path.stat().st_size, file_sha256(path)
    manifest_file.write_text(json.dumps(manifest))
    (dataset_dir / VERIFIED_NAME).unlink(missing_ok=True)
    return manifest


def fake_record(method: str, dataset: str, seed: int, config_id: str, rsum: float) -> dict[str, Any]:
    """A results record as `bench` writes it, reduced to what the leaderboard and the sweep read."""
    from xmodal_bench.report.results import RESULTS_SCHEMA

    metrics = {name: rsum / 6 for name in CAPTION_METRICS}
    metrics["rsum"] = rsum
    return {
        "schema": RESULTS_SCHEMA,
        "method": method,
        "dataset": dataset,
        "protocol": "caption",
        "scale": "tiny",
        "seed": seed,
        "config_id": config_id,
        "changes": [],
        "primary_mode": "global",
        "metrics": metrics,
        "modes": {"global": {"metrics": metrics, "latency_ms": {"t2i_ms": 0.01}}},
        "efficiency": {
            "train_samples_per_s": 100.0,
            "images_per_s": 50.0,
            "params_m": 3.8,
            "peak_memory_mb": 900,
        },
    }
