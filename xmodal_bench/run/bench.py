"""One benchmark run: fit a method on a dataset, test it, and return its results record.

    record = bench(RunRequest("tgdt", "synth").compose())

A run trains in its staging folder and replaces the previous complete run of its config only
once its `results.json` is written (`run.folders`): `{runs_dir}/{dataset}/{method}/{run_id}/`
with `config.yaml` (the resolved config), `checkpoints/`, `logs/` (CSV metrics, the learning
rate per step) and `results.json`. The caller rebuilds the leaderboards from the record (the CLI
after one bench, the sweep once after its grid).

Order of work, cheapest check first, so a mistake costs nothing and loses nothing: the trainer
settings (Lightning's own judgement, no data or wandb yet), the run lock, the dataset (generated
or verified), the warm start, the model; only then wandb and training.

Failure behaviour:
- `checkpoints/last.ckpt` (in staging) is rewritten atomically every
  `trainer.checkpoint_every_n_steps` steps and at every epoch end; `bench(cfg, resume=True)`
  (`--resume`) continues a killed run from it, mid-epoch, with the batches it would have seen (a
  plain rerun starts over).
- A NaN / Inf loss stops training before its optimizer step (`NonFiniteLossGuard`): one error line
  naming the step, the loss terms and the last good checkpoint; no results, the previous run kept.
- With `data.on_error=skip` the record counts the corrupt training samples skipped.
"""

from __future__ import annotations

import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
from omegaconf import DictConfig

from xmodal_bench.atomic import atomic_write_json, atomic_write_text
from xmodal_bench.config import to_yaml
from xmodal_bench.metrics.protocols import get_protocol
from xmodal_bench.registry import create_method
from xmodal_bench.report.ranks import save_ranks
from xmodal_bench.report.results import RESULTS_FILE
from xmodal_bench.report.significance import save_bootstrap
from xmodal_bench.run.callbacks import EfficiencyMonitor, NonFiniteLossGuard, SkippedSamples
from xmodal_bench.run.checkpoints import LAST, remove_partial_saves, resumable_checkpoint
from xmodal_bench.run.data import build_datamodule, prepare_data
from xmodal_bench.run.folders import (
    RunLock,
    config_id,
    publish,
    recover,
    run_dir_for,
    run_id_for,
    staging_dir_for,
)
from xmodal_bench.run.record import results_record
from xmodal_bench.run.trainer import (
    build_trainer,
    check_trainer_settings,
    checkpoint_callbacks,
    learning_rate_monitor,
)
from xmodal_bench.run.wandb_logging import build_wandb_logger, finish_wandb
from xmodal_bench.run.warm_start import resolve_warm_start

# A resumed run reuses its checkpoint and log folders on purpose (the CSV log is appended to).
warnings.filterwarnings(
    "ignore", message=r"(Checkpoint|Experiment logs) directory .* exists and is not empty"
)


def bench(cfg: DictConfig, resume: bool = False) -> dict[str, Any]:
    """Fit + test one (method, dataset) pair; returns the results record (published on rank 0).

    `resume`: continue from the staging folder's `checkpoints/last.ckpt` when there is one (else
    start from scratch); without it an unfinished earlier attempt is discarded.
    """
    started = time.perf_counter()
    run_dir, staging = run_dir_for(cfg), staging_dir_for(cfg)
    is_zero = check_trainer_settings(cfg)
    lock = RunLock(cfg)
    if is_zero:
        lock.acquire()
    try:
        if is_zero:
            recover(run_dir)
        return _bench(cfg, resume, started, run_dir, staging, is_zero)
    finally:
        lock.release()


def _bench(
    cfg: DictConfig, resume: bool, started: float, run_dir: Path, staging: Path, is_zero: bool
) -> dict[str, Any]:
    cfg = prepare_data(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    checkpoints = staging / "checkpoints"
    found = resumable_checkpoint(checkpoints) if resume else None
    if resume and found is None:
        print(f"nothing to resume in {checkpoints}: starting a new run", flush=True)
    model_cfg, warm_start = resolve_warm_start(cfg)
    if warm_start is not None:
        print(
            f"backbone weights from {warm_start} (backbone.pretrained={cfg.backbone.pretrained})", flush=True
        )
    method = create_method(model_cfg)
    datamodule = build_datamodule(cfg, method.backbone.tokenizer())
    if is_zero:
        if found is None:
            shutil.rmtree(staging, ignore_errors=True)  # an unfinished earlier attempt: start fresh
        else:
            remove_partial_saves(checkpoints)
        (staging / RESULTS_FILE).unlink(missing_ok=True)
        atomic_write_text(staging / "config.yaml", to_yaml(cfg))
    saving = checkpoint_callbacks(cfg, checkpoints)
    checkpoint = saving[0]
    efficiency, skipped = EfficiencyMonitor(), SkippedSamples()
    wandb_logger = build_wandb_logger(cfg, staging, run_id_for(cfg), config_id(cfg))
    callbacks = [*saving, efficiency, skipped, NonFiniteLossGuard(), learning_rate_monitor()]
    trainer = build_trainer(cfg, staging, callbacks, [wandb_logger] if wandb_logger else [])
    has_val = cfg.data.val_split is not None
    try:
        if method.trains:
            trainer.fit(method, datamodule=datamodule, ckpt_path=found[0] if found else None)
            has_best = cfg.eval.checkpoint == "best" and has_val and checkpoint.best_model_path
            which = "best" if has_best else "last"
            tested: str | None = checkpoint.best_model_path if which == "best" else str(checkpoints / LAST)
        else:  # zero-shot: the model as built is what is tested
            which, tested = "as built", None
        fit_seconds = time.perf_counter() - started
        trainer.test(method, datamodule=datamodule, ckpt_path=tested, verbose=False)
    except BaseException:
        finish_wandb(wandb_logger, None)
        raise
    record = results_record(
        cfg,
        method,
        trainer,
        started=started,
        efficiency={**efficiency.summary(), "fit_seconds": fit_seconds},
        training={
            "epochs": trainer.current_epoch,
            "steps": trainer.global_step,
            "tested_checkpoint": which,
            "best_val": _best_val(checkpoint),
            "resumed_from_step": found[1] if found else None,
            "started_from": str(warm_start) if warm_start is not None else None,
            "zero_shot": not method.trains,
            "world_size": trainer.world_size,
            "global_batch_size": cfg.data.batch_size,
            "per_device_batch_size": cfg.data.batch_size // trainer.world_size,
            "gather_features": bool(cfg.trainer.gather_features),
        },
        data={"on_error": cfg.data.on_error, "train_samples_skipped": skipped.count},
    )
    if trainer.is_global_zero:
        record["wandb"] = _moved(finish_wandb(wandb_logger, record), staging, run_dir)
        save_ranks(staging, method.eval_results["test"]["ranks"])
        save_bootstrap(staging, get_protocol(record["protocol"]), method.eval_results["test"]["ranks"])
        atomic_write_json(staging / RESULTS_FILE, record)
        publish(staging, run_dir)
    record["_run_dir"] = str(run_dir)
    return record


def _moved(info: dict[str, Any] | None, staging: Path, run_dir: Path) -> dict[str, Any] | None:
    """wandb's record of where its offline files are, after the staging folder becomes the run folder."""
    if info and isinstance(info.get("dir"), str) and info["dir"].startswith(str(staging)):
        info = {**info, "dir": str(run_dir) + info["dir"][len(str(staging)) :]}
    return info


def _best_val(checkpoint: Any) -> float | None:
    score = checkpoint.best_model_score
    return float(score) if score is not None else None
