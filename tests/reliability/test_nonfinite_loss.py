"""A NaN loss, injected for real mid-training: the run stops at once with the step, the loss terms and
the last good checkpoint named, exits non-zero, and writes neither results nor leaderboard."""

from __future__ import annotations

import math

import pytest
import torch

from xmodal_bench.cli import main
from xmodal_bench.methods.base import RetrievalMethod

from .helpers import assert_one_line_error, bench_argv, results_files

pytestmark = pytest.mark.slow

BAD_STEP = 5


def test_nan_loss_stops_cleanly(synth_root, tmp_path, capsys, monkeypatch, synth_params) -> None:
    original = RetrievalMethod.log_step

    def poisoned(self, step, batch_size):
        if self.global_step == BAD_STEP:
            step = step.with_losses({name: value * math.nan for name, value in step.losses.items()})
        return original(self, step, batch_size)

    monkeypatch.setattr(RetrievalMethod, "log_step", poisoned)
    boards = tmp_path / "boards"
    boards.mkdir()
    (boards / "synth.md").write_text("previous table\n")
    argv = bench_argv(
        synth_root, tmp_path, "synth", "trainer.checkpoint_every_n_steps=2", params=synth_params["synth"]
    )
    code = main(argv)
    line = assert_one_line_error(code, capsys.readouterr().err, r"non-finite training loss \(nan\) at step 5")
    assert "epoch 0, batch 5" in line and "loss terms: infonce=nan" in line
    (last,) = (tmp_path / "runs").glob("_staging/synth/clip/*/checkpoints/last.ckpt")
    assert f"last good checkpoint: {last} (step 4)" in line
    # nothing half-written: no results, the leaderboard untouched, the checkpoint is the good step-4 one
    assert not results_files(tmp_path)
    assert (boards / "synth.md").read_text() == "previous table\n" and not (boards / "synth.json").exists()
    state = torch.load(last, map_location="cpu", weights_only=True)
    assert state["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point())
    assert not list(last.parent.glob(".*.tmp"))
