"""A 2-process `bench` is the 1-process experiment: through Lightning's DDP launcher
(`--devices 2 trainer.strategy=ddp`) and through `torchrun`, the logged `train/loss` equals the
1-process run's at every step and the test metrics agree.

`data.batch_size` is the global batch: each rank trains on its half of the same global batches
(`datamodules.streams`), and the in-batch loss gathers both halves, so the loss every rank logs
is the loss one process computes on the whole batch.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

SIZES = {"train_images": 48, "val_images": 1, "test_images": 40, "shard_images": 16}
COMMON = [
    "--method", "clip", "--data", "synth", "--max-epochs", "2",
    "trainer.accelerator=cpu", "data.batch_size=16", "data.eval_batch_size=16", "data.workers=0",
    "data.val_split=null", "trainer.log_every_n_steps=1", "eval.latency_queries=10",
    *[f"data.synthetic.{k}={v}" for k, v in SIZES.items()],
]  # fmt: skip


def _bench(tmp_path: Path, name: str, launcher: list[str], extra: list[str]) -> tuple[dict, dict[int, float]]:
    data = tmp_path / "data"
    runs = tmp_path / name
    argv = [*launcher, "bench", "--data-root", str(data), "--runs-dir", str(runs), *COMMON, *extra]
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    (results,) = (runs / "synth" / "clip").glob("*/results.json")
    with open(results.parent / "logs" / "metrics.csv") as handle:
        losses = {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")
        }
    return json.loads(results.read_text()), losses


def test_two_processes_train_the_one_process_experiment(tmp_path) -> None:
    python = [sys.executable, "-m", "xmodal_bench"]
    one, one_losses = _bench(tmp_path, "one", python, ["trainer.devices=1"])
    launched, launched_losses = _bench(tmp_path, "ddp", python, ["trainer.devices=2", "trainer.strategy=ddp"])
    torchrun = [
        shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun")),
        "--nproc-per-node",
        "2",
        "-m",
        "xmodal_bench",
    ]
    elastic, elastic_losses = _bench(
        tmp_path, "torchrun", torchrun, ["trainer.devices=2", "trainer.strategy=ddp"]
    )
    assert one["training"]["world_size"] == 1 and one["training"]["per_device_batch_size"] == 16
    assert len(one_losses) == one["training"]["steps"] == 30  # 240 captions / 16 = 15 steps x 2 epochs
    for record, losses in ((launched, launched_losses), (elastic, elastic_losses)):
        training = record["training"]
        assert (training["world_size"], training["global_batch_size"], training["per_device_batch_size"]) == (
            2,
            16,
            8,
        )
        assert set(losses) == set(one_losses)
        for step, loss in one_losses.items():
            assert losses[step] == pytest.approx(loss, rel=1e-3), f"step {step}"
        assert abs(record["metrics"]["rsum"] - one["metrics"]["rsum"]) <= 1.0
