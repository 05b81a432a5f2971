"""Determinism: the same seed on the same machine gives identical metrics."""

from __future__ import annotations

import json

import pytest

from xmodal_bench.cli import main

from .helpers import bench_argv, results_files

pytestmark = pytest.mark.slow


def test_same_seed_same_metrics(synth_root, tmp_path, synth_params) -> None:
    records = []
    for attempt in ("a", "b"):
        out = tmp_path / attempt
        argv = bench_argv(
            synth_root,
            out,
            "synth",
            "data.val_split=null",
            "trainer.limit_train_batches=8",
            params=synth_params["synth"],
        )
        assert main(argv) == 0
        (path,) = results_files(out)
        records.append(json.loads(path.read_text()))
    first, second = records
    assert first["run_id"] == second["run_id"]
    assert first["metrics"] == second["metrics"]  # exact equality, not approximate
    assert {m: e["metrics"] for m, e in first["modes"].items()} == {
        m: e["metrics"] for m, e in second["modes"].items()
    }
