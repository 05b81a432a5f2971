"""The GPU suite's --smoke mode runs on CPU at toy sizes, so the script cannot rot unnoticed."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

PERF = Path(__file__).resolve().parents[2] / "benchmarks" / "perf"


def test_gpu_suite_smoke(capsys, monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(PERF))
    common = importlib.import_module("_common")
    monkeypatch.setattr(common, "RESULTS", tmp_path)  # never write into the repository
    suite = importlib.import_module("gpu_suite")
    assert suite.main(["--smoke", "--methods", "clip", "irra", "clip+bcls"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    cases = {r["case"]: r for r in records}
    for size in ("224", "384x128"):
        for method in ("clip", "irra", "clip+bcls"):
            assert cases[f"train/{method}/{size}"]["samples_per_s"] > 0
            assert cases[f"train/{method}/{size}"]["loss_finite"]
        assert cases[f"loader/{size}"]["workers_needed"] >= 1
    assert cases["train/irra/384x128"]["cuhk_60_epochs_gpu_hours"] > 0
    assert cases["eval/200x1000x32"]["vs_matmul"] > 0
    assert "build_s" in cases["faiss/flat"] or "skipped" in cases["faiss/flat"]
    assert not [r for r in records if "error" in r]
    table = Path(cases["gpu/summary"]["table"]).read_text()
    assert table.startswith("### GPU suite") and "train/irra/384x128" in table


def test_a_case_over_budget_is_skipped_not_run(monkeypatch):
    monkeypatch.syspath_prepend(str(PERF))
    suite = importlib.import_module("gpu_suite").Suite(budget_s=1.0)
    record = suite.run("train/x", 10.0, lambda: {"ran": True})
    assert "skipped" in record and "ran" not in record
