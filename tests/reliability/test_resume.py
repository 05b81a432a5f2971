"""Kill and resume: a bench run SIGKILLed mid-epoch continues with `--resume` from its last checkpoint
and writes one complete results file; checkpoints are written atomically; the data stream resumes
exactly where the checkpoint left off."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from datamodules import RetrievalDataModule
from xmodal_bench.cli import main
from xmodal_bench.errors import UserError
from xmodal_bench.run.checkpoints import SafeCheckpointIO, resumable_checkpoint

from .helpers import bench_argv, results_files

STEPS_PER_EPOCH = 64 * 5 // 16  # tiny synth: 64 train images x 5 captions, batch 16


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume(synth_root, tmp_path, synth_params, capsys) -> None:
    argv = bench_argv(
        synth_root,
        tmp_path,
        "synth",
        "trainer.checkpoint_every_n_steps=3",
        "data.val_split=null",
        params=synth_params["synth"],
    )
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    log = open(tmp_path / "killed.log", "wb")  # noqa: SIM115 (closed below)
    process = subprocess.Popen([sys.executable, "-m", "xmodal_bench", *argv], stdout=log, stderr=log, env=env)
    deadline = time.monotonic() + 240
    try:
        while not list((tmp_path / "runs").glob("_staging/synth/clip/*/checkpoints/last.ckpt")):
            assert process.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
        log.close()
    assert process.returncode == -signal.SIGKILL
    (checkpoints,) = (tmp_path / "runs").glob("_staging/synth/clip/*/checkpoints")
    assert not results_files(tmp_path)
    found = resumable_checkpoint(checkpoints)
    assert found is not None and 0 < found[1] < STEPS_PER_EPOCH  # mid-epoch

    assert main([*argv, "--resume"]) == 0
    assert "nothing to resume" not in capsys.readouterr().out
    (path,) = results_files(tmp_path)  # one complete results file
    record = json.loads(path.read_text())
    assert record["training"]["resumed_from_step"] == found[1]
    assert record["training"]["steps"] == STEPS_PER_EPOCH and record["training"]["epochs"] == 1
    assert record["metrics"]["rsum"] > 0
    assert not list(checkpoints.glob(".*.tmp"))
    # the CSV log continues the killed run's log (one header, steps of both processes)
    lines = (path.parent / "logs" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith(("epoch", "step", "train", "val", "test")) and lines.count(lines[0]) == 1


def test_resume_without_checkpoint_starts_fresh_and_bad_checkpoint_is_one_line(tmp_path) -> None:
    assert resumable_checkpoint(tmp_path) is None
    (tmp_path / "last.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(
        UserError, match=r"cannot resume from .*last.ckpt: unreadable checkpoint.*without --resume"
    ):
        resumable_checkpoint(tmp_path)


def test_checkpoint_save_is_atomic(tmp_path, monkeypatch) -> None:
    io = SafeCheckpointIO()
    target = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 3, "w": torch.ones(4)}, target)
    real_save = torch.save

    def dies_half_way(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as if the process were interrupted mid-write

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 6, "w": torch.zeros(4)}, target)
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(target, weights_only=False)["global_step"] == 3  # the last good one is kept
    assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]  # no partial file left behind


@pytest.mark.parametrize("workers", [0, 2])
def test_train_stream_resumes_exactly_mid_epoch(synth_root, tokenizer, workers) -> None:
    def loader():
        dm = RetrievalDataModule(
            synth_root,
            "synth",
            tokenizer,
            batch_size=16,
            workers=workers,
            image_size=64,
            persistent_workers=False,
        )
        dm.setup("fit")
        return dm, dm.train_dataloader()

    dm, full = loader()
    epoch0, epoch1 = ([b["caption_index"].tolist() for b in full] for _ in range(2))
    assert epoch0 != epoch1  # reshuffled per epoch
    dm.teardown("fit")
    dm, resumed = loader()
    resumed._progress_fn = lambda: 7  # what a checkpoint taken after 7 batches of epoch 0 records
    state = resumed.state_dict()
    assert state == {"epoch": 0, "batches": 7}
    resumed.load_state_dict(state)
    assert [b["caption_index"].tolist() for b in resumed] == epoch0[7:]
    assert [b["caption_index"].tolist() for b in resumed] == epoch1  # only the resumed epoch skips
    dm.teardown("fit")


def test_new_settings_keep_existing_config_ids() -> None:
    """Checkpoint cadence never changes a run's id; `data.on_error` only when not at its default, so
    runs recorded before these settings existed (and the CI baseline) keep their ids."""
    from xmodal_bench.config import compose, to_dict
    from xmodal_bench.registry import method_sections
    from xmodal_bench.run.folders import config_id

    parts, sections = method_sections("clip")

    def cid(*overrides: str) -> str:
        return config_id(compose(parts, sections, "synth", "tiny", overrides=list(overrides)))

    base = cid()
    assert cid("trainer.checkpoint_every_n_steps=7") == base == cid("data.on_error=error")
    assert cid("data.on_error=skip") != base
    cfg = compose(parts, sections, "synth", "tiny")
    assert "on_error" in to_dict(cfg)["data"]  # present in the saved config, absent from the hash
