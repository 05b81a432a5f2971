"""A sweep interrupted mid-way and started again redoes only the unfinished pairs."""

from __future__ import annotations

import pytest

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.report.results import RESULTS_FILE
from xmodal_bench.sweep import runner
from xmodal_bench.sweep.spec import load_sweep

from .helpers import fake_record


def test_interrupted_sweep_redoes_only_unfinished_pairs(tmp_path, monkeypatch) -> None:
    sweep_file = tmp_path / "grid.yaml"
    sweep_file.write_text(
        "methods: [clip]\ndatasets: [synth]\nseeds: [0, 1, 2, 3]\nscale: tiny\n"
        f"data_root: {tmp_path / 'data'}\nruns_dir: {tmp_path / 'runs'}\n"
        f"leaderboards_dir: {tmp_path / 'boards'}\n"
    )
    spec = load_sweep(sweep_file)
    calls: list[int] = []
    resumed: list[bool] = []
    interrupted: list[int] = []

    def fake_execute(run, **_options):
        calls.append(run.seed)
        resumed.append(run.resume)
        if run.seed == 2 and not interrupted:  # the first sweep dies in its third run
            interrupted.append(run.seed)
            (run.run_dir / "checkpoints").mkdir(parents=True)  # a partial run: checkpoints, no results
            raise KeyboardInterrupt
        atomic_write_json(
            run.run_dir / RESULTS_FILE, fake_record("clip", "synth", run.seed, "c0", 100.0 + run.seed)
        )
        return runner.Outcome(run, "ok", 0.1, 0)

    monkeypatch.setattr(runner, "execute", fake_execute)
    with pytest.raises(KeyboardInterrupt):
        runner.run_sweep(spec, quiet=True)
    assert calls == [0, 1, 2]

    calls.clear()
    report = runner.run_sweep(spec, quiet=True)
    assert calls == [2, 3]  # finished pairs are skipped, the partial and the never-started ones run
    assert [o.status for o in report.outcomes] == ["skipped", "skipped", "ok", "ok"]
    assert "| tiny | 4 |" in (tmp_path / "boards" / "synth.md").read_text()  # all four seeds in the table
    assert all(resumed)  # an unfinished run continues from its checkpoint (bench starts afresh without one)

    calls.clear()
    resumed.clear()
    runner.run_sweep(spec, quiet=True, force=True)
    assert calls == [0, 1, 2, 3] and not any(resumed)  # --force: every run again, from scratch
