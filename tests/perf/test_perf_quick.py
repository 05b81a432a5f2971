"""Each perf script's --quick mode runs and prints valid JSON lines (no speed claims here)."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

PERF = Path(__file__).resolve().parents[2] / "benchmarks" / "perf"


def run_quick(script: str, capsys, monkeypatch, tmp_path) -> list[dict]:
    monkeypatch.syspath_prepend(str(PERF))
    common = importlib.import_module("_common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)  # never write into the repository
    module = importlib.import_module(script)
    assert module.main(["--quick", "--out", script]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    records = [json.loads(line) for line in lines]
    assert records and all("case" in r for r in records)
    summary = records[-1]
    table = Path(summary["table"]).read_text()
    assert summary["case"].endswith("/summary") and table.startswith("### ")
    rows = [line for line in table.splitlines() if line.startswith("|")]
    assert (
        len(rows) == 2 + len(records) - 1 and len({row.count("|") for row in rows}) == 1
    )  # a well-formed table
    return records[:-1]


def test_metrics_engine_quick(capsys, monkeypatch, tmp_path):
    records = run_quick("metrics_engine", capsys, monkeypatch, tmp_path)
    cases = {r["case"] for r in records}
    assert {"metrics/coco5k/ours", "metrics/coco5k/clip_benchmark", "metrics/1k/torchmetrics"} <= cases
    assert all(r.get("agrees_with_ours") in (None, True) for r in records)  # the same R@K everywhere


def test_data_loading_quick(capsys, monkeypatch, tmp_path):
    records = run_quick("data_loading", capsys, monkeypatch, tmp_path)
    readers = {r["case"].rsplit("/", 1)[1]: r for r in records}
    assert set(readers) == {"folder", "shards", "shards + draft", "shards, --shorter-side 224"}
    assert all(r["images_per_s"] > 0 for r in records)
    assert readers["shards, --shorter-side 224"]["jpeg_kb"] < readers["shards"]["jpeg_kb"]  # stored smaller


def test_two_stage_latency_quick(capsys, monkeypatch, tmp_path):
    records = run_quick("two_stage_latency", capsys, monkeypatch, tmp_path)
    assert {r["mode"] for r in records} == {"global", "fused", "exhaustive"}


@pytest.mark.slow
def test_training_step_quick(capsys, monkeypatch, tmp_path):
    records = run_quick("training_step", capsys, monkeypatch, tmp_path)
    assert records[0]["case"] == "train/clip" and records[0]["bare_samples_per_s"] > 0


def teardown_module() -> None:
    for name in ("metrics_engine", "data_loading", "two_stage_latency", "training_step", "_common"):
        sys.modules.pop(name, None)
