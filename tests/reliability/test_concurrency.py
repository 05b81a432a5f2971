"""Two processes writing results and rebuilding the leaderboard at the same time never leave a
half-written or inconsistent file (atomic rename + the rebuild lock)."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

ROUNDS = 6

WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[4])
    from helpers import fake_record
    from xmodal_bench.atomic import atomic_write_json
    from xmodal_bench.report.leaderboard import write_leaderboards

    runs, boards, tag = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    for i in range({rounds}):
        record = fake_record("clip", "synth", 0, f"{{tag}}{{i}}", 100.0 + i)
        record["changes"] = [f"writer={{tag}}", f"round={{i}}"]
        atomic_write_json(runs / "synth" / "clip" / f"{{tag}}-{{i}}" / "results.json", record)
        write_leaderboards(runs, boards, ["synth"])
    """
).format(rounds=ROUNDS)


def _check_consistent(boards: Path) -> int | None:
    """Parse every table file as it is now; return the row count of the json table (None if absent)."""
    rows = None
    table = boards / "synth.json"
    if table.exists():
        rows = len(json.loads(table.read_text())["rows"])  # never a partial JSON document
    if (boards / "synth.csv").exists():
        lines = list(csv.reader(io.StringIO((boards / "synth.csv").read_text())))
        assert lines and all(len(line) == len(lines[0]) for line in lines)
    if (boards / "synth.md").exists():
        text = (boards / "synth.md").read_text()
        assert text.startswith("#") and text.endswith("\n")
    return rows


def test_parallel_writers_never_corrupt_a_file(tmp_path) -> None:
    runs, boards = tmp_path / "runs", tmp_path / "boards"
    helpers = str(Path(__file__).parent)
    writers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(runs), str(boards), tag, helpers]) for tag in "ab"
    ]
    seen = []
    while any(w.poll() is None for w in writers):
        rows = _check_consistent(boards)
        if rows is not None:
            seen.append(rows)
        time.sleep(0.005)
    assert [w.returncode for w in writers] == [0, 0]
    assert _check_consistent(boards) == 2 * ROUNDS  # the last rebuild saw every results file
    assert seen == sorted(seen)  # a table never goes back to an older state
    for path in runs.glob("synth/clip/*/results.json"):
        json.loads(path.read_text())
    assert not [p.name for p in (*boards.iterdir(), *runs.rglob("*")) if p.name.endswith(".tmp")]
