"""`xmodal-bench eval --checkpoint CKPT [--data D] [--devices N]`: test a trained checkpoint.

The checkpoint carries the resolved config of its run (`RetrievalMethod` saves it as the
hyperparameter `config`), so the method is rebuilt exactly (`registry.create_method`) and its
weights loaded strictly. `--data` evaluates on another dataset: its data section (protocol,
splits, synthetic sizes) replaces the training one, but the model's input size and the
train-set facts its heads were built with are kept. Overrides (`key=value`) apply last.

Results are written like a bench run's (`results.json` schema, `config.yaml`, CSV logs) to
`--out`, by default `{run_dir}/eval/{dataset}/` for a checkpoint inside a run folder
(`.../checkpoints/*.ckpt`), else `{checkpoint stem}-eval/{dataset}/` beside it. These folders are
not leaderboard rows. Under DDP (`--devices 2`, `trainer.strategy=ddp`) every rank evaluates its
shard of the test split and the gathered metrics are those of one process.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from xmodal_bench.errors import UserError


def load_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise UserError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    config = (
        (checkpoint.get("hyper_parameters") or {}).get("config") if isinstance(checkpoint, dict) else None
    )
    if not isinstance(config, dict) or "state_dict" not in checkpoint:
        raise UserError(f"{path}: not an xmodal-bench checkpoint (no saved run config or state_dict)")
    return checkpoint


def checkpoint_config(
    saved: dict[str, Any],
    *,
    data: str | None = None,
    data_root: str | None = None,
    devices: Any = None,
    overrides: list[str] | None = None,
) -> DictConfig:
    """The run config of a checkpoint, moved to `data` (default: its own dataset) and overridden."""
    from xmodal_bench.config import compose, parse_overrides, schema_for, validate, with_values
    from xmodal_bench.registry import dataset_info, method_sections

    parts, sections = method_sections(saved["method"])
    base = OmegaConf.merge(OmegaConf.structured(schema_for(sections)), saved)
    dataset = data or base.data.name
    dataset_info(dataset)  # unknown dataset: the list of known ones
    if dataset != base.data.name:
        fresh = compose(parts, sections, dataset, base.scale).data
        keep = {
            k: base.data[k]
            for k in ("image_size", "train_images", "train_identities", "eval_batch_size", "workers", "root")
        }
        base.data = OmegaConf.merge(fresh, keep)
    flags: dict[str, Any] = {}
    if data_root is not None:
        flags["data"] = {"root": data_root}
    if devices is not None:
        flags["trainer"] = {"devices": devices}
    cfg = OmegaConf.merge(base, flags)
    for item in parse_overrides(list(overrides or [])):
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except Exception as exc:
            raise UserError(f"override {item!r}: {str(exc).splitlines()[0]}") from None
    validate(cfg)
    return with_values(cfg, {})


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
    from xmodal_bench.config import to_yaml, with_values
    from xmodal_bench.registry import create_method
    from xmodal_bench.sweep.results import RESULTS_FILE
    from xmodal_bench.sweep.run import build_datamodule, build_trainer, ensure_dataset, results_record

    started = time.perf_counter()
    checkpoint_path = Path(checkpoint_path)
    checkpoint = load_checkpoint(checkpoint_path)
    cfg = checkpoint_config(
        checkpoint["hyper_parameters"]["config"],
        data=data,
        data_root=data_root,
        devices=devices,
        overrides=overrides,
    )
    ensure_dataset(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    # every weight comes from the checkpoint: no download, and no `run:` source needed any more
    method = create_method(with_values(cfg, {"backbone": {"pretrained": None}}))
    method.load_state_dict(checkpoint["state_dict"], strict=True)
    out_dir = Path(out) if out is not None else default_out_dir(checkpoint_path, cfg.data.name)
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
    record["evaluated"] = {
        "checkpoint": str(checkpoint_path.resolve()),
        "trained_on": checkpoint["hyper_parameters"]["config"]["data"]["name"],
    }
    if trainer.is_global_zero:
        atomic_write_json(out_dir / RESULTS_FILE, record)
    record["_run_dir"] = str(out_dir)
    return record


# ------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `eval` subcommand's options."""
    from xmodal_bench.cli import _devices

    parser.add_argument("--checkpoint", type=Path, required=True, help="a .ckpt written by bench")
    parser.add_argument("--data", default=None, help="dataset to test on (default: the one it trained on)")
    parser.add_argument("--data-root", default=None, help="folder holding converted datasets")
    parser.add_argument("--devices", type=_devices, default=None, help="number of devices or 'auto'")
    parser.add_argument(
        "--out", type=Path, default=None, help="results folder (default: {run}/eval/{dataset}/)"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.eval_batch_size=64"
    )


def run(args: argparse.Namespace) -> int:
    from lightning.pytorch.utilities import rank_zero_only

    from xmodal_bench.cli import format_summary

    record = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        data_root=args.data_root,
        devices=args.devices,
        out=args.out,
        overrides=args.overrides,
    )
    if rank_zero_only.rank == 0:
        print(format_summary(record))
    return 0
