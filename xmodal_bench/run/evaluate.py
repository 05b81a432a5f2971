"""Test a trained checkpoint (the library behind `xmodal-bench eval --checkpoint CKPT [--data D]`).

The checkpoint carries the resolved config of its run (`RetrievalMethod` saves it as the
hyperparameter `config`), so the method is rebuilt exactly (`run.checkpoints.restore_method`)
and its weights loaded strictly. The file is read with `weights_only=True`: a checkpoint that
asks to build Python objects is refused and nothing in it runs. `--data` evaluates on another
dataset: its data section (protocol, splits, synthetic sizes) replaces the training one, but the
model's input size and the train-set facts its heads were built with are kept. Overrides
(`key=value`) apply last.

Results are written like a bench run's (`results.json` schema, `config.yaml`, CSV logs,
`ranks.npz`) to `--out`, by default `{run_dir}/eval/{dataset}/` for a checkpoint inside a run
folder (`.../checkpoints/*.ckpt`), else `{checkpoint stem}-eval/{dataset}/` beside it; `--out`
must be a folder (a file there is refused). These folders are not leaderboard rows. Under DDP
(`--devices 2`, `trainer.strategy=ddp`) every rank evaluates its shard of the test split and
the gathered metrics are those of one process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmodal_bench.errors import UserError


def moved_config(
    cfg: DictConfig,
    *,
    data: str | None = None,
    data_root: str | None = None,
    devices: Any = None,
    overrides: list[str] | None = None,
) -> DictConfig:
    """A checkpoint's run config moved to dataset `data` (default: its own) and overridden."""
    from xmodal_bench.config import with_changes
    from xmodal_bench.registry import dataset_info
    from xmodal_bench.run.request import RunRequest

    dataset = data or cfg.data.name
    root = data_root or cfg.data.root
    dataset_info(dataset, root)  # unknown dataset: the list of known ones
    values: dict[str, Any] = {}
    if dataset != cfg.data.name:
        fresh = OmegaConf.to_container(
            RunRequest(cfg.method, dataset, cfg.scale, data_root=root).compose().data
        )
        keep = ("image_size", "train_images", "train_identities", "eval_batch_size", "workers", "root")
        values["data"] = {**fresh, **{k: cfg.data[k] for k in keep}}
    if data_root is not None:
        values.setdefault("data", {})["root"] = data_root
    if devices is not None:
        values["trainer"] = {"devices": devices}
    return with_changes(cfg, values, overrides)


def default_out_dir(checkpoint: Path, dataset: str) -> Path:
    if checkpoint.parent.name == "checkpoints":
        return checkpoint.parent.parent / "eval" / dataset
    return checkpoint.parent / f"{checkpoint.stem}-eval" / dataset


def evaluate_checkpoint(
    checkpoint_path: Path,
    *,
    data: str | None = None,
    data_root: str | None = None,
    devices: Any = None,
    out: Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Test the checkpoint on `data`; returns the results record (written to `out` on rank 0)."""
    import lightning as L

    from xmodal_bench.atomic import atomic_write_json, atomic_write_text
    from xmodal_bench.config import to_yaml
    from xmodal_bench.metrics.protocols import get_protocol
    from xmodal_bench.report.ranks import save_ranks
    from xmodal_bench.report.results import RESULTS_FILE
    from xmodal_bench.report.significance import save_bootstrap
    from xmodal_bench.run.checkpoints import checkpoint_config, read_checkpoint, restore_method
    from xmodal_bench.run.data import build_datamodule, ensure_dataset
    from xmodal_bench.run.record import results_record
    from xmodal_bench.run.trainer import build_trainer, check_trainer_settings

    started = time.perf_counter()
    checkpoint_path = Path(checkpoint_path)
    checkpoint = read_checkpoint(checkpoint_path)
    saved = checkpoint_config(checkpoint, checkpoint_path)
    cfg = moved_config(saved, data=data, data_root=data_root, devices=devices, overrides=overrides)
    out_dir = Path(out) if out is not None else default_out_dir(checkpoint_path, cfg.data.name)
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out {out_dir} is a file; give a folder for the results")
    check_trainer_settings(cfg)
    ensure_dataset(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    method = restore_method(checkpoint, cfg, checkpoint_path)
    datamodule = build_datamodule(cfg, method.backbone.tokenizer())
    trainer = build_trainer(cfg, out_dir, [])
    if trainer.is_global_zero:
        atomic_write_text(out_dir / "config.yaml", to_yaml(cfg))
    trainer.test(method, datamodule=datamodule, verbose=False)
    record = results_record(
        cfg,
        method,
        trainer,
        started=started,
        efficiency={},
        training={"epochs": checkpoint.get("epoch"), "steps": checkpoint.get("global_step")},
    )
    record["evaluated"] = {"checkpoint": str(checkpoint_path.resolve()), "trained_on": saved.data.name}
    if trainer.is_global_zero:
        save_ranks(out_dir, method.eval_results["test"]["ranks"])
        save_bootstrap(out_dir, get_protocol(record["protocol"]), method.eval_results["test"]["ranks"])
        atomic_write_json(out_dir / RESULTS_FILE, record)
    record["_run_dir"] = str(out_dir)
    return record
