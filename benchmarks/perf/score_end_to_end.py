"""`xmodal-bench score` end to end against one bare matmul plus the process start.

    .venv/bin/python benchmarks/perf/score_end_to_end.py            # 5K x 25K x 512, coco, 3 rounds
    .venv/bin/python benchmarks/perf/score_end_to_end.py --quick    # toy shape

Each round, interleaved: `xmodal-bench score --protocol coco` (load, normalise, coco5k and the
five coco1k folds, JSON) as a fresh process; `python -c "import torch"` (the process start); and
one bare `img @ txt.T` timed inside a process. Goal: score <= 1.5 x (matmul + process start),
medians compared.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import emit, emit_summary, fmt_s, machine, provenance_notes, write_markdown
from cli_start import environment
from metrics_engine import paired_embeddings

MATMUL = "import sys, time, numpy, torch; a = torch.from_numpy(numpy.load(sys.argv[1])); "
MATMUL += "b = torch.from_numpy(numpy.load(sys.argv[2])); t = time.perf_counter(); a @ b.T; "
MATMUL += "print(time.perf_counter() - t)"


def wall(argv: list[str]) -> tuple[float, str]:
    started = time.perf_counter()
    out = subprocess.run(argv, env=environment(), capture_output=True, text=True, check=True)
    return time.perf_counter() - started, out.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="score_end_to_end")
    args = parser.parse_args(argv)
    import torch

    shape = (100, 500, 16) if args.quick else (5_000, 25_000, 512)
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        img, txt, _ = paired_embeddings(*shape, torch.device("cpu"))
        paths = [str(Path(tmp) / "img.npy"), str(Path(tmp) / "txt.npy")]
        np.save(paths[0], img.numpy())
        np.save(paths[1], txt.numpy())
        score_argv = [sys.executable, "-m", "xmodal_bench", "score", "--image-embeddings", paths[0]]
        score_argv += ["--text-embeddings", paths[1], "--protocol", "coco"]
        scores, starts, matmuls = [], [], []
        for _ in range(1 if args.quick else args.rounds):
            seconds, out = wall(score_argv)
            scores.append(seconds)
            metrics = json.loads(out)
            starts.append(wall([sys.executable, "-c", "import torch"])[0])
            matmuls.append(float(wall([sys.executable, "-c", MATMUL, *paths])[1]))
    score, start, matmul = (statistics.median(x) for x in (scores, starts, matmuls))
    ratio = score / (matmul + start)
    record = emit(
        {
            "case": "score/coco/" + "x".join(map(str, shape)),
            "score_s": round(score, 3),
            "process_start_s": round(start, 3),
            "matmul_s": round(matmul, 3),
            "vs_matmul_plus_start": round(ratio, 3),
            "rsum_5k": round(metrics["5k/rsum"], 3) if "5k/rsum" in metrics else None,
        }
    )
    info_end = machine()
    rows = [
        [
            f"{shape[0]:,} x {shape[1]:,} x {shape[2]}",
            fmt_s(score),
            fmt_s(start),
            fmt_s(matmul),
            f"{ratio:.2f}x",
        ]
    ]
    table = write_markdown(
        args.out,
        "`xmodal-bench score --protocol coco` end to end",
        ["images x captions x dim", "score", "python -c 'import torch'", "bare matmul", "vs matmul + start"],
        rows,
        [
            f"Medians of {len(scores)} interleaved rounds; {record['case']}.",
            *provenance_notes("score_end_to_end.py", argv, info, info_end),
        ],
    )
    emit_summary("score/summary", table, info, info_end)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
