"""The CI regression gate: `benchmarks/sweeps/ci.yaml` against `leaderboards/ci_baseline.json`.

`make test` runs the CI sweep (every landed method on tiny synthetic subsets, in this process, one
thread, deterministic) and fails when a metric falls below its baseline value minus its tolerance,
saying which metric fell and by how much. When a change moves the numbers on purpose, rewrite the
baseline with `xmodal-bench sweep --config benchmarks/sweeps/ci.yaml --update-baseline --in-process`
and commit it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from xmodal_bench.sweep.baseline import build_baseline, check_baseline, load_baseline
from xmodal_bench.sweep.runner import format_report, run_sweep
from xmodal_bench.sweep.spec import load_sweep

REPO = Path(__file__).resolve().parents[2]
CI_SWEEP = REPO / "benchmarks" / "sweeps" / "ci.yaml"


def _ci_spec():
    spec = load_sweep(CI_SWEEP)
    assert spec.baseline is not None
    return dataclasses.replace(
        spec, baseline=dataclasses.replace(spec.baseline, path=REPO / spec.baseline.path)
    )


def test_baseline_covers_every_run_of_the_ci_sweep() -> None:
    spec = _ci_spec()
    baseline = load_baseline(spec.baseline.path)
    expected = {f"{dataset}/{method}" for dataset in spec.datasets for method in spec.methods}
    assert set(baseline["entries"]) == expected, "rerun the CI sweep with --update-baseline"
    for key, entry in baseline["entries"].items():
        assert entry["metrics"], key
        assert all(m["tolerance"] >= spec.baseline.min_tolerance for m in entry["metrics"].values()), key


@pytest.mark.slow
def test_ci_sweep_meets_the_baseline(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    spec = _ci_spec()
    report = run_sweep(
        spec,
        in_process=True,
        quiet=True,
        data_root=str(tmp_path / "data"),
        runs_dir=str(tmp_path / "runs"),
        leaderboards_dir=str(tmp_path / "boards"),
    )
    summary = format_report(report)
    print(summary)
    assert not report.failed, f"CI sweep runs failed:\n{summary}"
    assert len(report.outcomes) == len(spec.methods) * len(spec.datasets)
    assert not report.baseline_problems, "metrics fell below leaderboards/ci_baseline.json:\n" + "\n".join(
        report.baseline_problems
    )


# ------------------------------------------------------------------------- the check itself (no training)


def _record(method: str, seed: int, r1: float, config_id: str = "cfg") -> dict:
    metrics = {"r1": r1, "medr": 3.0}
    return {
        "method": method,
        "dataset": "synth_reid",
        "seed": seed,
        "config_id": config_id,
        "modes": {"global": {"metrics": metrics}},
    }


def test_check_names_the_metric_that_fell_and_by_how_much(tmp_path) -> None:
    spec = dataclasses.replace(
        _ci_spec(),
        seeds=[0],
        baseline=dataclasses.replace(_ci_spec().baseline, sigmas=3.0, min_tolerance=1.0),
    )
    records = [_record("clip", s, r1) for s, r1 in ((0, 40.0), (1, 42.0), (2, 38.0))]
    baseline = build_baseline(records, spec)
    entry = baseline["entries"]["synth_reid/clip"]["metrics"]
    assert entry["global/r1"] == {"expected": 40.0, "tolerance": 6.0, "seed_std": 2.0}  # 3 x std over seeds
    assert "global/medr" not in entry  # lower-is-better ranks are not gated
    assert check_baseline([_record("clip", 0, 35.0)], baseline).ok  # within the tolerance

    result = check_baseline([_record("clip", 0, 30.0, config_id="other")], baseline)
    assert result.problems == [
        "synth_reid/clip global/r1 fell by 10.00, 25.0%: 30.00 < expected 40.00 - tolerance 6.00"
    ]
    assert any("config changed" in note for note in result.notes)

    missing = check_baseline([_record("irra", 0, 50.0)], baseline)
    assert "synth_reid/irra: no baseline entry" in missing.problems[0]
    assert any("in the baseline but not run" in note for note in missing.notes)
