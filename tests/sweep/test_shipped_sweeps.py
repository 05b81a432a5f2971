"""Every sweep file shipped in benchmarks/sweeps/ loads and composes each of its runs, and the
ALADIN student diagnostic reaches the settings its comment promises."""

from __future__ import annotations

import pytest

from xmodal_bench.sweep.spec import check_runs, list_sweeps, load_sweep


@pytest.mark.parametrize("name", list_sweeps())
def test_shipped_sweep_composes_every_run(name: str) -> None:
    spec = load_sweep(name)
    requests, skipped = check_runs(spec)
    assert not skipped
    assert len(requests) == len(spec.methods) * len(spec.datasets) * len(spec.seeds)


def test_aladin_student_sweep_is_the_synth_sweeps_synth_reid_with_the_command_line_last() -> None:
    student, synth = load_sweep("aladin_student"), load_sweep("synth")
    extra = ["trainer.max_epochs=60", "aladin.matching_finetune_fraction=0.9"]
    requests, _ = check_runs(student, extra_overrides=extra)
    assert {(method, dataset) for method, dataset, _ in requests} == {("aladin", "synth_reid")}
    assert [r.seed for _, _, r in requests] == synth.seeds
    assert student.runs_dir != synth.runs_dir  # never mixes into the published sweep's tables
    cfg = requests[0][2].check()
    assert cfg.trainer.max_epochs == 60  # the command line overrides the inherited 5 epochs
    assert cfg.aladin.matching_finetune_fraction == 0.9
    published = next(r for m, d, r in check_runs(synth)[0] if (m, d) == ("aladin", "synth_reid")).check()
    assert published.trainer.max_epochs == 5
    assert cfg.data.synthetic == published.data.synthetic  # the published sweep's synth_reid sizes
    assert cfg.data.synthetic.train_ids == 300 and cfg.data.synthetic.test_ids == 100
