"""One benchmark run: fit a method on a dataset, test it, write `results.json`, refresh the leaderboard.

Layout of a run: `{runs_dir}/{dataset}/{method}/{run_id}/` with `config.yaml` (the resolved
config), `checkpoints/`, `logs/` (CSV metrics) and `results.json`. The run id is derived from the
config (scale, seed and a hash of everything else), so the same config always lands in the same
folder: re-running replaces its results instead of adding a duplicate row to the leaderboard.

Failure behaviour:
- `checkpoints/last.ckpt` is rewritten atomically every `trainer.checkpoint_every_n_steps` steps
  and at every epoch end; `bench(cfg, resume=True)` (`--resume`) continues a killed run from it,
  mid-epoch, with the batches it would have seen (a plain rerun starts over).
- A NaN / Inf loss stops training before its optimizer step (`NonFiniteLossGuard`): one error line
  naming the step, the loss terms and the last good checkpoint; no `results.json`, no leaderboard.
- `results.json` is written only once testing succeeded, atomically; the leaderboard rebuild
  holds a lock. With `data.on_error=skip` the record counts the corrupt training samples skipped.
"""

from __future__ import annotations

import hashlib
import json
import resource
import shutil
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from datamodules import RetrievalDataModule, ensure_synthetic, read_manifest
from xmodal_bench.atomic import atomic_write_json, atomic_write_text
from xmodal_bench.backbones import count_parameters
from xmodal_bench.config import NON_IDENTITY_KEYS, to_dict, to_yaml, with_values
from xmodal_bench.errors import UserError
from xmodal_bench.registry import create_method, dataset_info
from xmodal_bench.sweep.callbacks import EfficiencyMonitor, NonFiniteLossGuard, SkippedSamples
from xmodal_bench.sweep.checkpointing import (
    LAST,
    AtomicCheckpointIO,
    remove_partial_saves,
    resumable_checkpoint,
)
from xmodal_bench.sweep.leaderboard import write_leaderboards
from xmodal_bench.sweep.results import (
    RESULTS_FILE,
    RESULTS_SCHEMA,
    git_sha,
    hardware,
    versions,
)
from xmodal_bench.sweep.wandb_logging import build_wandb_logger, finish_wandb
from xmodal_bench.sweep.warm_start import resolve_warm_start

# A resumed run reuses its checkpoint and log folders on purpose (the CSV log is appended to).
warnings.filterwarnings(
    "ignore", message=r"(Checkpoint|Experiment logs) directory .* exists and is not empty"
)

# Keys added to the schema after runs were recorded: left out of the hash while at their default,
# so that adding them did not change the config id of earlier runs (nor of the CI baseline).
_HASH_NEUTRAL_DEFAULTS = {"data.on_error": "error"}


def config_id(cfg: DictConfig) -> str:
    """A short hash of everything that decides what a run measures (seed and paths left out).

    Runs with the same config id differ only by seed: the leaderboard averages them.
    """
    identity = to_dict(cfg)
    neutral = [
        key for key, default in _HASH_NEUTRAL_DEFAULTS.items() if OmegaConf.select(cfg, key) == default
    ]
    for key in (*NON_IDENTITY_KEYS, *neutral):
        *parents, leaf = key.split(".")
        node = identity
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def run_id_for(cfg: DictConfig) -> str:
    return str(cfg.run_id) if cfg.run_id else f"{cfg.scale}-{config_id(cfg)}-seed{cfg.seed}"


def run_dir_for(cfg: DictConfig) -> Path:
    return Path(cfg.runs_dir) / cfg.data.name / cfg.method / run_id_for(cfg)


def ensure_dataset(cfg: DictConfig) -> None:
    """Make sure `cfg.data.name` exists under `cfg.data.root` (synthetic sets are generated and cached;
    a real set must have been converted), else one UserError says where we looked and what to run."""
    info = dataset_info(cfg.data.name)
    root = Path(cfg.data.root)
    if info.synthetic:
        ensure_synthetic(root, cfg.data.name, **dict(cfg.data.synthetic))
    elif not (root / cfg.data.name / "manifest.json").is_file():
        where = f" (raw data: {info.obtain})" if info.obtain else ""
        command = info.convert.replace("ROOT", str(root))
        raise UserError(
            f"no dataset {cfg.data.name!r} at {root / cfg.data.name}: convert it first with `{command}`{where}"
        )


def prepare_data(cfg: DictConfig) -> DictConfig:
    """Make sure the dataset exists and is intact before anything is built; return the config
    completed with the dataset facts a method needs to build its heads (train images, identities).

    Synthetic sets are generated (and cached); a real set must have been converted, and its
    manifest must match its shards, else one UserError says where we looked and what to run.
    """
    ensure_dataset(cfg)
    root = Path(cfg.data.root)
    splits = [s for s in (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split) if s]
    lenient = [cfg.data.train_split] if cfg.data.on_error == "skip" else []
    train = read_manifest(root, cfg.data.name, splits=splits, lenient=lenient)["splits"][cfg.data.train_split]
    identities = train["identities"] if train["identities"] is not None else train["images"]
    return with_values(cfg, {"data": {"train_images": train["images"], "train_identities": identities}})


def build_datamodule(cfg: DictConfig, tokenizer: Any) -> RetrievalDataModule:
    d = cfg.data
    return RetrievalDataModule(
        root=d.root,
        dataset=d.name,
        tokenizer=tokenizer,
        batch_size=d.batch_size,
        eval_batch_size=d.eval_batch_size,
        workers=d.workers,
        image_size=tuple(d.image_size),
        augment=d.augment,
        train_split=d.train_split,
        val_split=d.val_split,
        test_split=d.test_split,
        shuffle_buffer=d.shuffle_buffer,
        seed=cfg.seed,
        on_error=d.on_error,
    )


def monitor_for(cfg: DictConfig) -> str:
    """The validation metric that selects the best checkpoint."""
    return "val/r1" if cfg.data.protocol == "person" else "val/rsum"


def build_trainer(
    cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback], loggers: list[Any] | None = None
) -> L.Trainer:
    """The Trainer of a run: CSV logs under `run_dir/logs` plus any extra `loggers` (wandb)."""
    t = cfg.trainer
    try:
        return _trainer(cfg, run_dir, callbacks, loggers)
    except (ValueError, TypeError, MisconfigurationException) as exc:  # Lightning refusing a setting
        raise UserError(f"trainer settings ({_trainer_keys(t)}): {str(exc).splitlines()[0]}") from None


def _trainer_keys(t: DictConfig) -> str:
    keys = ("accelerator", "devices", "num_nodes", "strategy", "precision")
    return ", ".join(f"trainer.{k}={t[k]}" for k in keys)


def _trainer(
    cfg: DictConfig, run_dir: Path, callbacks: list[L.Callback], loggers: list[Any] | None
) -> L.Trainer:
    t = cfg.trainer
    has_val = cfg.data.val_split is not None
    return L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.strategy,
        precision=t.precision,
        max_epochs=t.max_epochs,
        gradient_clip_val=t.gradient_clip_val,
        log_every_n_steps=t.log_every_n_steps,
        check_val_every_n_epoch=t.check_val_every_n_epoch,
        limit_train_batches=t.limit_train_batches,
        limit_val_batches=None if has_val else 0,
        num_sanity_val_steps=0,
        deterministic=t.deterministic,
        default_root_dir=run_dir,
        logger=[CSVLogger(save_dir=run_dir, name="logs", version=""), *(loggers or [])],
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
    )


def peak_memory_mb(device: torch.device) -> tuple[float, str]:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda_max_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_max_rss"


def checkpoint_callbacks(cfg: DictConfig, checkpoints: Path) -> list[ModelCheckpoint]:
    """`best.ckpt` (by validation, at epoch ends) and `last.ckpt` (epoch ends and every N steps)."""
    has_val = cfg.data.val_split is not None
    callbacks = [
        ModelCheckpoint(
            dirpath=checkpoints,
            filename="best",
            monitor=monitor_for(cfg) if has_val else None,
            mode="max",
            save_last=True,
            enable_version_counter=False,
        )
    ]
    every = cfg.trainer.checkpoint_every_n_steps
    if every > 0:  # only last.ckpt (save_top_k=0): the point to resume from
        callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoints,
                save_top_k=0,
                save_last=True,
                every_n_train_steps=every,
                enable_version_counter=False,
            )
        )
    return callbacks


def bench(cfg: DictConfig, resume: bool = False) -> dict[str, Any]:
    """Fit + test one (method, dataset) pair; returns the results record (written on rank 0).

    `resume`: continue from `checkpoints/last.ckpt` of this config's run folder when there is one
    (else start from scratch); without it a rerun starts over.
    """
    started = time.perf_counter()
    cfg = prepare_data(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    run_dir = run_dir_for(cfg)
    checkpoints = run_dir / "checkpoints"
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
    has_val = cfg.data.val_split is not None
    saving = checkpoint_callbacks(cfg, checkpoints)
    checkpoint = saving[0]
    efficiency, skipped = EfficiencyMonitor(), SkippedSamples()
    wandb_logger = build_wandb_logger(cfg, run_dir, run_id_for(cfg), config_id(cfg))
    callbacks = [*saving, efficiency, skipped, NonFiniteLossGuard()]
    trainer = build_trainer(cfg, run_dir, callbacks, [wandb_logger] if wandb_logger else [])
    if trainer.is_global_zero:
        if found is None:
            shutil.rmtree(checkpoints, ignore_errors=True)  # a rerun of the same config starts fresh
            shutil.rmtree(run_dir / "logs", ignore_errors=True)
        else:
            remove_partial_saves(checkpoints)
        (run_dir / RESULTS_FILE).unlink(missing_ok=True)
        atomic_write_text(run_dir / "config.yaml", to_yaml(cfg))
    try:
        trainer.fit(method, datamodule=datamodule, ckpt_path=found[0] if found else None)
        fit_seconds = time.perf_counter() - started
        which = "best" if cfg.eval.checkpoint == "best" and has_val and checkpoint.best_model_path else "last"
        tested = checkpoint.best_model_path if which == "best" else str(checkpoints / LAST)
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
        },
        data={"on_error": cfg.data.on_error, "train_samples_skipped": skipped.count},
    )
    if trainer.is_global_zero:
        record["wandb"] = finish_wandb(wandb_logger, record)
        atomic_write_json(run_dir / RESULTS_FILE, record)
        write_leaderboards(Path(cfg.runs_dir), Path(cfg.leaderboards_dir), [cfg.data.name])
    record["_run_dir"] = str(run_dir)
    return record


def results_record(
    cfg: DictConfig,
    method: Any,
    trainer: L.Trainer,
    *,
    started: float,
    efficiency: dict[str, Any],
    training: dict[str, Any],
    data: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `results.json` record of a tested method (see `sweep.results`); shared by bench and eval."""
    report = method.eval_results["test"]
    memory, memory_kind = peak_memory_mb(method.device)
    primary = report["primary_mode"]
    return {
        "schema": RESULTS_SCHEMA,
        "method": cfg.method,
        "dataset": cfg.data.name,
        "protocol": cfg.data.protocol,
        "scale": cfg.scale,
        "seed": cfg.seed,
        "run_id": run_id_for(cfg),
        "config_id": config_id(cfg),
        "changes": list(cfg.changes),
        "primary_mode": primary,
        "metrics": report["modes"][primary]["metrics"],
        "modes": report["modes"],
        "efficiency": {
            **efficiency,
            **report["encode"],
            "latency_ms": report["modes"][primary].get("latency_ms", {}),
            "params_m": count_parameters(method) / 1e6,
            "peak_memory_mb": memory,
            "peak_memory_kind": memory_kind,
            "devices": trainer.world_size,
        },
        "training": training,
        "data": data or {"on_error": cfg.data.get("on_error", "error"), "train_samples_skipped": 0},
        "environment": {
            "versions": versions(),
            "git_sha": git_sha(Path(__file__).parent),
            "hardware": hardware(),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": time.perf_counter() - started,
        "config": to_dict(cfg),
    }


def _best_val(checkpoint: ModelCheckpoint) -> float | None:
    score = checkpoint.best_model_score
    return float(score) if score is not None else None
