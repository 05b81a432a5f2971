"""`--help`, `list` and every argument or config mistake answer without importing torch, Lightning
or open_clip (checked through `sys.modules` in a fresh process; the timing is
benchmarks/perf/cli_start.py's)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[2] / "benchmarks" / "perf"
sys.path.insert(0, str(PERF))
cli_start = importlib.import_module("cli_start")
sys.path.remove(str(PERF))


@pytest.mark.parametrize(("name", "argv", "expected"), cli_start.CASES, ids=[c[0] for c in cli_start.CASES])
def test_answers_without_heavy_imports(name, argv, expected, tmp_path):
    code, heavy, stderr = cli_start.probe(argv, tmp_path)
    assert code == expected, stderr
    assert heavy == [], f"{name} imported {heavy}"
    if expected == 2:
        errors = [line for line in stderr.splitlines() if not line.startswith("PROBE ")]
        assert len(errors) == 1 and "error:" in errors[0] and "Traceback" not in stderr, stderr


def test_full_compose_still_checks_method_ranges():
    """The light check leaves a method section's range checks to the real config (imports torch)."""
    from xmodal_bench.errors import UserError
    from xmodal_bench.run.request import RunRequest

    with pytest.raises(UserError, match=r"irra\.temperature must be positive"):
        RunRequest("irra", overrides=("irra.temperature=-1",)).compose()
