"""`xmodal-bench sweep`: sweep-file errors, planning, skip-existing / --force, failures recorded.

Runs are faked here (a fake `bench` writes a results record, or fails) so the runner's own
bookkeeping is tested in milliseconds; one test runs a real failing subprocess end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.cli import main
from xmodal_bench.report.results import RESULTS_SCHEMA
from xmodal_bench.sweep import runner
from xmodal_bench.sweep.spec import load_sweep, plan_runs


def _write_sweep(tmp_path: Path, body: str, name: str = "grid") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(
        body
        + f"\ndata_root: {tmp_path / 'data'}\nruns_dir: {tmp_path / 'runs'}\n"
        + f"leaderboards_dir: {tmp_path / 'boards'}\n"
    )
    return path


GRID = """
methods: [clip, irra]
datasets: [synth, synth_reid]
seeds: [0, 1]
overrides: [trainer.max_epochs=1, data.workers=0]
method_overrides: {irra: [irra.mask_prob=0.2]}
dataset_overrides: {synth_reid: [data.batch_size=16]}
"""


# ------------------------------------------------------------------------------------ sweep-file errors


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("methods: [clip]\ndatasets: [synth]\nmethod: [x]\n", "unknown key 'method'"),
        ("methods: []\ndatasets: [synth]\n", "at least one method and one dataset"),
        ("methods: [clip]\ndatasets: [synth]\nseeds: [a]\n", "seeds must be a list of integers"),
        ("methods: [clip]\ndatasets: [synth]\nscale: huge\n", "scale 'huge'"),
        ("methods: [clip]\ndatasets: [synth]\noverrides: [lr]\n", "bad override 'lr'"),
        ("methods: [clip]\ndatasets: [synth]\ndataset_overrides: {coco: [a=1]}\n", "'coco' is not in"),
        ("methods: [clip]\ndatasets: [synth]\nthreads: 0\n", "threads must be a positive integer"),
        ("methods: [clip]\ndatasets: [synth]\nbaseline: {tolerance: 1}\n", "baseline: expected a mapping"),
        ("methods: [clip, nosuch]\ndatasets: [synth]\n", "not registered: nosuch"),
        ("methods: [clip]\ndatasets: [nosuch]\n", "nosuch"),
        ("methods: [clip]\ndatasets: [synth]\noverrides: [optim.nosuch=1]\n", "clip on synth"),
        ("methods: [clip\n", "not valid YAML"),
    ],
)
def test_bad_sweep_file_is_one_line_and_exit_2(tmp_path, capsys, body, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    assert main(["sweep", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("xmodal-bench: error:")
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_unknown_sweep_name_lists_the_known_ones(capsys) -> None:
    assert main(["sweep", "--config", "no_such_sweep"]) == 2
    err = capsys.readouterr().err
    assert "unknown sweep 'no_such_sweep'" in err and "ci" in err


def test_skip_unknown_runs_the_registered_methods(tmp_path) -> None:
    spec = load_sweep(_write_sweep(tmp_path, "methods: [clip, nosuch]\ndatasets: [synth]\n"))
    runs, missing = plan_runs(spec, skip_unknown=True)
    assert missing == ["nosuch"] and [r.method for r in runs] == ["clip"]


# ------------------------------------------------------------------------------------------- planning


def test_plan_is_the_full_grid_with_overrides_in_order(tmp_path) -> None:
    spec = load_sweep(_write_sweep(tmp_path, GRID))
    runs, _ = plan_runs(spec, extra_overrides=["optim.lr=0.01"])
    cells = [(r.dataset, r.method, r.seed) for r in runs]
    assert cells == [(d, m, s) for d in ("synth", "synth_reid") for m in ("clip", "irra") for s in (0, 1)]
    irra_reid = runs[-1]
    overrides = list(irra_reid.request.overrides)
    assert overrides == [
        "trainer.max_epochs=1", "data.workers=0", "irra.mask_prob=0.2", "data.batch_size=16", "optim.lr=0.01"
    ]  # fmt: skip
    assert irra_reid.cfg.data.batch_size == 16 and irra_reid.cfg.irra.mask_prob == 0.2
    assert irra_reid.run_dir == tmp_path / "runs" / "synth_reid" / "irra" / irra_reid.run_id
    # seeds share a config id (they are averaged), the method and dataset overrides do not leak
    assert runs[0].run_id.replace("seed0", "") == runs[1].run_id.replace("seed1", "")
    assert runs[0].cfg.data.batch_size != 16 and "irra" not in runs[0].cfg


def _fake_record(run, r1: float = 40.0) -> dict:
    protocol = run.cfg.data.protocol
    metrics = (
        {"r1": r1, "r5": r1 + 5, "r10": r1 + 9, "map": r1 / 2, "minp": r1 / 3}
        if protocol == "person"
        else {"i2t_r1": r1, "t2i_r1": r1, "rsum": 3 * r1}
    )
    return {
        "schema": RESULTS_SCHEMA,
        "method": run.method,
        "dataset": run.dataset,
        "protocol": protocol,
        "scale": "tiny",
        "seed": run.seed,
        "run_id": run.run_id,
        "config_id": run.run_id.split("-")[1],
        "changes": [],
        "primary_mode": "global",
        "metrics": metrics,
        "modes": {"global": {"metrics": metrics, "latency_ms": {"t2i_ms": 0.1, "i2t_ms": 0.1}}},
        "efficiency": {"params_m": 1.0},
    }


@pytest.fixture
def fake_bench(monkeypatch):
    """Replace the in-process run by a fake: writes a record, or fails for (method, dataset) in `fail`."""
    calls: list[str] = []
    fail: set[tuple[str, str]] = set()

    def fake(run, threads=None):
        calls.append(run.label)
        if (run.method, run.dataset) in fail:
            return 1, "Traceback (most recent call last):\nRuntimeError: loss exploded at step 3\n"
        atomic_write_json(run.run_dir / "results.json", _fake_record(run))
        return 0, ""

    monkeypatch.setattr(runner, "run_in_process", fake)
    return calls, fail


def test_dry_run_lists_the_plan_and_runs_nothing(tmp_path, fake_bench, capsys) -> None:
    path = _write_sweep(tmp_path, GRID)
    assert main(["sweep", "--config", str(path), "--dry-run", "--in-process"]) == 0
    out = capsys.readouterr().out
    assert "8 runs: 8 planned" in out and fake_bench[0] == []


def test_existing_results_are_skipped_unless_force(tmp_path, fake_bench, capsys) -> None:
    calls, _ = fake_bench
    path = _write_sweep(tmp_path, GRID)
    assert main(["sweep", "--config", str(path), "--in-process", "--quiet"]) == 0
    assert len(calls) == 8
    assert "8 runs: 8 ok" in capsys.readouterr().out
    assert (tmp_path / "boards" / "synth.md").is_file() and (tmp_path / "boards" / "README.md").is_file()

    # a complete run is skipped (an interrupted sweep resumes); a missing one runs again
    spec = load_sweep(path)
    runs, _ = plan_runs(spec)
    (runs[3].run_dir / "results.json").unlink()
    calls.clear()
    assert main(["sweep", "--config", str(path), "--in-process", "--quiet"]) == 0
    assert calls == [runs[3].label]
    assert "7 skipped, 1 ok" in capsys.readouterr().out
    assert main(["sweep", "--config", str(path), "--dry-run"]) == 0
    assert "8 runs: 8 skipped" in capsys.readouterr().out

    calls.clear()
    assert main(["sweep", "--config", str(path), "--in-process", "--quiet", "--force"]) == 0
    assert len(calls) == 8


def test_a_failing_run_is_recorded_and_the_sweep_goes_on(tmp_path, fake_bench, capsys) -> None:
    calls, fail = fake_bench
    fail.add(("irra", "synth"))
    path = _write_sweep(tmp_path, GRID)
    assert main(["sweep", "--config", str(path), "--in-process", "--quiet"]) == 1
    captured = capsys.readouterr()
    assert len(calls) == 8  # the runs after the failures still ran
    assert "8 runs: 6 ok, 2 failed" in captured.out
    assert "RuntimeError: loss exploded at step 3" in captured.out  # the summary names the error
    assert "2 run(s) failed" in captured.err
    failed = [r for r in plan_runs(load_sweep(path))[0] if (r.method, r.dataset) == ("irra", "synth")]
    for run in failed:
        record = json.loads(runner.failure_path(run).read_text())
        assert record["error"] == "RuntimeError: loss exploded at step 3" and record["returncode"] == 1
        assert record["command"][:5] == ["xmodal-bench", "bench", "--resume", "--method", "irra"]
    sweep_record = json.loads((tmp_path / "runs" / "_sweeps" / "grid.json").read_text())
    assert [r["status"] for r in sweep_record["runs"]].count("failed") == 2
    # the leaderboards were still rebuilt from the runs that worked
    assert "| irra" not in (tmp_path / "boards" / "synth.md").read_text()
    assert "| irra" in (tmp_path / "boards" / "synth_reid.md").read_text()

    # fixed: the next sweep reruns only the failed runs, and clears their failure records
    fail.clear()
    calls.clear()
    assert main(["sweep", "--config", str(path), "--in-process", "--quiet"]) == 0
    assert sorted(calls) == sorted(r.label for r in failed)
    assert not any(runner.failure_path(r).exists() for r in failed)


@pytest.mark.slow
def test_subprocess_failure_keeps_its_log(tmp_path, capsys) -> None:
    """A real run in a subprocess that fails (dataset not converted): recorded with its log, exit 1."""
    path = _write_sweep(tmp_path, "methods: [clip]\ndatasets: [f30k]\ntimeout_s: 300\n")
    assert main(["sweep", "--config", str(path), "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "1 runs: 1 failed" in out and "no dataset 'f30k'" in out
    (run,), _ = plan_runs(load_sweep(path))
    log = runner.log_path(run).read_text()
    assert log.startswith("$ ") and "xmodal-bench data convert f30k" in log
    assert json.loads(runner.failure_path(run).read_text())["returncode"] == 2
    assert not run.run_dir.exists()  # nothing is written into a run folder but a finished run
