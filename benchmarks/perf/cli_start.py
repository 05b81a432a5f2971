"""CLI start: `--help`, `list` and argument / config mistakes against `python -c "import torch"`.

    .venv/bin/python benchmarks/perf/cli_start.py            # every case, 5 rounds
    .venv/bin/python benchmarks/perf/cli_start.py --quick    # a few cases, 2 rounds

Each case is one fresh `python -m xmodal_bench ARGS` process (wall time to exit), run in rounds
interleaved with `python -c "import torch"` so that both see the same load; the medians are
compared (goal: at most 0.3x). Every case must exit with its expected status and must not import
torch, Lightning or open_clip (`HEAVY`); tests/cli/test_cli_start.py checks that part on every
test run, through `sys.modules`, not timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "lightning", "open_clip")
GOAL = 0.3

# (name, argv, expected exit status)
HELP_CASES = [
    ("help", ["--help"], 0),
    *[
        (f"{command}/help", [*command.split(), "--help"], 0)
        for command in (
            "list",
            "bench",
            "zeroshot",
            "pretrain",
            "eval",
            "score",
            "index",
            "index build",
            "index search",
            "sweep",
            "leaderboard",
            "data",
            "data synth",
            "data convert",
        )
    ],
]
MISTAKE_CASES = [
    ("no_command", [], 2),
    ("unknown_command", ["nope"], 2),
    ("bench/unknown_flag", ["bench", "--nope"], 2),
    ("bench/bad_number", ["bench", "--max-epochs", "0"], 2),
    ("bench/bad_scale", ["bench", "--scale", "huge"], 2),
    ("bench/unknown_method", ["bench", "--method", "nope"], 2),
    ("bench/plugin_as_method", ["bench", "--method", "bcls"], 2),
    ("bench/unknown_plugin", ["bench", "--method", "clip+nope"], 2),
    ("bench/unknown_dataset", ["bench", "--data", "nope"], 2),
    ("bench/bad_override", ["bench", "not-an-override"], 2),
    ("bench/interpolation", ["bench", "optim.lr=${oc.env:HOME}"], 2),
    ("bench/unknown_key", ["bench", "optim.nope=1"], 2),
    ("bench/unknown_section", ["bench", "nope.lr=1"], 2),
    ("bench/wrong_type", ["bench", "optim.lr=fast"], 2),
    ("bench/impossible_value", ["bench", "optim.lr=-1"], 2),
    ("bench/unknown_protocol", ["bench", "data.protocol=nope"], 2),
    ("bench/method_unknown_key", ["bench", "--method", "irra", "irra.nope=1"], 2),
    ("bench/method_wrong_type", ["bench", "--method", "tgdt", "tgdt.heads=many"], 2),
    ("bench/plugin_unknown_key", ["bench", "--method", "clip+bcls", "bcls.nope=1"], 2),
    ("bench/missing_dataset", ["bench", "--data", "cuhk", "--data-root", "no/such/data"], 2),
    ("zeroshot/unknown_dataset", ["zeroshot", "--data", "nope"], 2),
    ("eval/missing_checkpoint", ["eval", "--checkpoint", "no/such.ckpt"], 2),
    (
        "score/missing_file",
        ["score", "--image-embeddings", "no.npy", "--text-embeddings", "no.npy", "--protocol", "caption"],
        2,
    ),
    (
        "score/person_without_pids",
        ["score", "--image-embeddings", "no.npy", "--text-embeddings", "no.npy", "--protocol", "person"],
        2,
    ),
    ("index/missing_checkpoint", ["index", "build", "--checkpoint", "no.ckpt", "--out", "no_index"], 2),
    ("index/missing_index", ["index", "search", "no_index", "--text", "a dog"], 2),
    ("sweep/unknown_sweep", ["sweep", "--config", "nope"], 2),
    ("sweep/bad_override", ["sweep", "--config", "ci", "optim.lr=-1"], 2),
    ("leaderboard/missing_runs", ["leaderboard", "--runs-dir", "no/such/runs"], 2),
]
LIST_CASES = [("list", ["list", "--data-root", "no/such/data"], 0)]
CASES = HELP_CASES + LIST_CASES + MISTAKE_CASES
QUICK = ["help", "bench/help", "list", "bench/unknown_method", "bench/impossible_value"]

# Runs one case in-process and reports whether a heavy module was imported (for the test).
PROBE = """
import sys
from xmodal_bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in {heavy!r} if m in sys.modules]
print("PROBE", code if isinstance(code, int) else 2, ",".join(heavy), file=sys.stderr)
"""


def environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def probe(argv: list[str], cwd: Path) -> tuple[int, list[str], str]:
    """(exit status, heavy modules imported, stderr) of `xmodal-bench ARGV` in a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(heavy=HEAVY), *argv],
        cwd=cwd,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    line = [x for x in out.stderr.splitlines() if x.startswith("PROBE ")][-1].split(" ")
    heavy = [m for m in (line[2] if len(line) > 2 else "").split(",") if m]
    return int(line[1]), heavy, out.stderr


def wall(argv: list[str], cwd: Path) -> tuple[float, int]:
    started = time.perf_counter()
    out = subprocess.run(argv, cwd=cwd, env=environment(), capture_output=True)
    return time.perf_counter() - started, out.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a few cases, 2 rounds")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (default 5; quick 2)")
    parser.add_argument("--out", default="cli_start", help="name of the markdown table")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import emit, emit_summary, fmt_s, machine, provenance_notes, write_markdown

    cases = [c for c in CASES if c[0] in QUICK] if args.quick else CASES
    rounds = args.rounds or (2 if args.quick else 5)
    info = machine()
    cwd = Path.cwd()
    torch_times: list[float] = []
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(rounds):  # interleaved: every case sees the same load as the torch import
        torch_times.append(wall([sys.executable, "-c", "import torch"], cwd)[0])
        for name, case_argv, expected in cases:
            seconds, code = wall([sys.executable, "-m", "xmodal_bench", *case_argv], cwd)
            if code != expected:
                raise SystemExit(f"{name}: exit status {code}, expected {expected}")
            times[name].append(seconds)
    base = statistics.median(torch_times)
    emit({"case": "cli/import_torch", "seconds": round(base, 4), "rounds": rounds})
    rows = [['`python -c "import torch"`', fmt_s(base), "1.0x", "-"]]
    worst = 0.0
    for name, case_argv, _ in cases:
        seconds = statistics.median(times[name])
        _, heavy, _ = probe(case_argv, cwd)
        ratio = seconds / base
        worst = max(worst, ratio)
        emit(
            {
                "case": f"cli/{name}",
                "argv": case_argv,
                "seconds": round(seconds, 4),
                "vs_import_torch": round(ratio, 3),
                "heavy_imports": heavy,
                "meets_goal": ratio <= GOAL and not heavy,
            }
        )
        rows.append(
            [
                f"`{' '.join(case_argv) or '(none)'}`",
                fmt_s(seconds),
                f"{ratio:.2f}x",
                ", ".join(heavy) or "none",
            ]
        )
    info_end = machine()
    notes = [
        f"Median of {rounds} interleaved rounds, each a fresh process; goal at most {GOAL}x the torch import. "
        f"Worst case: {worst:.2f}x.",
        *provenance_notes("cli_start.py", argv, info, info_end),
    ]
    table = write_markdown(
        args.out, "CLI start", ["command", "wall time", "vs import torch", "heavy imports"], rows, notes
    )
    emit_summary("cli/summary", table, info, info_end)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
