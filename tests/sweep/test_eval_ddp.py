"""`xmodal-bench eval --checkpoint` under 2-process CPU DDP (gloo) gives exactly the 1-process metrics.

The test split is odd on purpose: 53 images (265 captions) in 7 shards of at most 8, so rank 0
gets 4 shards (29 images) and rank 1 gets 3 (24): the ranks see different numbers of batches and
a short last batch, and only padding with masked items keeps them in step. The collector asserts
that every image and caption arrives exactly once (it raises otherwise), and the metrics must be
equal to the last digit. The checkpoint comes from a real one-epoch `bench` run, which also writes
an offline wandb run (checked here too, to share the training cost).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from xmodal_bench.cli import main
from xmodal_bench.run.evaluate import evaluate_checkpoint

pytestmark = [pytest.mark.slow, pytest.mark.ddp]

SIZES = {"train_images": 32, "val_images": 1, "test_images": 53, "shard_images": 8}


def _train(tmp_path: Path) -> dict:
    argv = [
        "bench", "--method", "clip", "--data", "synth", "--data-root", str(tmp_path / "data"),
        "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
        "--leaderboards-dir", str(tmp_path / "boards"),
        "trainer.accelerator=cpu", "trainer.devices=1", "data.batch_size=16", "data.workers=0",
        "data.val_split=null", "eval.latency_queries=10",
        *[f"data.synthetic.{k}={v}" for k, v in SIZES.items()],
    ]  # fmt: skip
    assert main(argv) == 0
    (path,) = (tmp_path / "runs" / "synth" / "clip").glob("*/results.json")
    return json.loads(path.read_text())


def test_ddp_eval_equals_single_process_and_bench_writes_offline_wandb(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    trained = _train(tmp_path)
    run_dir = tmp_path / "runs" / "synth" / "clip" / trained["run_id"]

    # wandb: an offline run directory inside the run folder, recorded in results.json
    assert trained["wandb"]["mode"] == "offline"
    (offline,) = (run_dir / "wandb").glob("offline-run-*")
    assert list(offline.glob("run-*.wandb")), "the offline run's data file"
    assert trained["wandb"]["id"] in offline.name

    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    common = ["trainer.accelerator=cpu", "data.eval_batch_size=8", "eval.latency_queries=10"]
    one = evaluate_checkpoint(checkpoint, devices=1, out=tmp_path / "one", overrides=common)
    assert one["efficiency"]["devices"] == 1
    assert one["metrics"] == trained["metrics"]  # the same weights as the bench run's test

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONWARNINGS": "ignore"}
    command = [
        sys.executable, "-m", "xmodal_bench", "eval", "--checkpoint", str(checkpoint),
        "--devices", "2", "--out", str(tmp_path / "two"), "trainer.strategy=ddp", *common,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["efficiency"]["devices"] == 2
    assert set(two["modes"]) == set(one["modes"])
    for mode in one["modes"]:
        assert two["modes"][mode]["metrics"] == one["modes"][mode]["metrics"], mode
