"""The data side of a run: make sure the dataset is there and intact, then its DataModule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from datamodules import RetrievalDataModule, ensure_synthetic, read_manifest
from xmodal_bench.config import with_values
from xmodal_bench.errors import UserError
from xmodal_bench.registry import dataset_info, parse_method_spec, require_dataset_present


def ensure_dataset(cfg: DictConfig) -> None:
    """Make sure `cfg.data.name` exists under `cfg.data.root`: synthetic sets are generated (and
    cached), a real set must have been converted; else one UserError says where we looked and what
    to run."""
    if dataset_info(cfg.data.name, cfg.data.root).synthetic:
        ensure_synthetic(Path(cfg.data.root), cfg.data.name, **dict(cfg.data.synthetic))
    else:
        require_dataset_present(cfg.data.name, cfg.data.root)


def require_train_split(cfg: DictConfig, splits: list[str] | None = None) -> None:
    """A training method needs `data.train_split`; else one UserError pointing to `zeroshot`."""
    if cfg.data.train_split is None and parse_method_spec(str(cfg.method))[0].cls.trains:
        known = f" (splits: {', '.join(splits)})" if splits is not None else ""
        raise UserError(
            f"dataset {cfg.data.name!r} has no train split{known}; "
            f"evaluate it without training: xmodal-bench zeroshot --data {cfg.data.name}"
        )


def prepare_data(cfg: DictConfig) -> DictConfig:
    """Make sure the dataset exists and is intact before anything is built; return the config
    completed with the dataset facts a method needs to build its heads (train images, identities).

    A real set's manifest must match its shards, else one UserError names the command to run.
    """
    ensure_dataset(cfg)
    root = Path(cfg.data.root)
    splits = [s for s in (cfg.data.train_split, cfg.data.val_split, cfg.data.test_split) if s]
    lenient = [cfg.data.train_split] if cfg.data.on_error == "skip" else []
    manifest = read_manifest(root, cfg.data.name, splits=splits, lenient=lenient)
    if cfg.data.train_split is None:  # an evaluation-only set (e.g. a CLIP_benchmark test export)
        require_train_split(cfg, list(manifest["splits"]))
        return with_values(cfg, {"data": {"train_images": None, "train_identities": None}})
    train = manifest["splits"][cfg.data.train_split]
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
        interpolation=d.interpolation,
    )
