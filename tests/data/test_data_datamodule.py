"""RetrievalDataModule: setup validation, counts, rank from the Trainer, and a real Lightning run."""

from __future__ import annotations

import shutil
from types import SimpleNamespace

import lightning as L
import pytest
import torch

from datamodules import RetrievalDataModule
from datamodules.manifest import read_manifest
from xmodal_bench.errors import UserError


def test_setup_refuses_missing_data_with_one_line(tmp_path, tokenizer):
    dm = RetrievalDataModule(tmp_path, "cuhk", tokenizer, workers=0)
    with pytest.raises(UserError) as err:
        dm.setup("fit")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "cuhk" / "manifest.json") in msg
    assert f"xmodal-bench data convert cuhk --source DIR --out {tmp_path}" in msg


def test_setup_refuses_a_stale_dataset(tmp_path, synth_root, tokenizer):
    shutil.copytree(synth_root / "synth", tmp_path / "synth")
    (tmp_path / "synth" / "val" / "2.tar").unlink()
    dm = RetrievalDataModule(tmp_path, "synth", tokenizer, workers=0)
    dm.setup("test")  # only the test split is needed: fine
    with pytest.raises(UserError, match=r"val/2.tar.*xmodal-bench data synth --name synth"):
        dm.setup("fit")


def test_counts_and_protocol(synth_root, tokenizer):
    dm = RetrievalDataModule(synth_root, "synth", tokenizer, workers=0)
    dm.setup()
    assert dm.protocol == "caption"
    assert dm.split_counts("train") == (64, 320) and dm.split_counts("test") == (48, 240)
    assert dm.num_pids("train") == 64
    assert dm.manifest == read_manifest(synth_root, "synth")
    reid = RetrievalDataModule(synth_root, "synth_reid", tokenizer, workers=0)
    reid.setup()
    assert reid.protocol == "person" and reid.split_counts("test") == (18, 36)
    assert reid.num_pids("train") == 12 and reid.num_pids("test") == 6
    with pytest.raises(UserError, match="no split 'extra'"):
        reid.split_counts("extra")


def test_rank_and_world_size_come_from_the_trainer(synth_root, tokenizer):
    dm = RetrievalDataModule(synth_root, "synth", tokenizer, batch_size=48, workers=0)  # global batch
    dm.trainer = SimpleNamespace(global_rank=2, world_size=3, current_epoch=5)
    dm.setup("fit")
    assert (dm.rank, dm.world_size) == (2, 3)
    loader = dm.train_dataloader()
    assert len(loader) == 320 // 48  # every rank steps through every global batch
    next(iter(loader))
    assert loader.dataset.epoch == 5  # the trainer's epoch drives the shuffle
    explicit = RetrievalDataModule(synth_root, "synth", tokenizer, workers=0, rank=0, world_size=2)
    explicit.trainer = SimpleNamespace(global_rank=1, world_size=4, current_epoch=0)
    explicit.setup("fit")
    assert (explicit.rank, explicit.world_size) == (0, 2)  # explicit arguments win


def test_without_val_split(synth_root, tokenizer):
    dm = RetrievalDataModule(synth_root, "synth", tokenizer, workers=0, val_split=None)
    dm.setup("fit")
    assert dm.val_dataloader() == []


def test_prepare_data_generates_missing_synthetic_sets(tmp_path, tokenizer, synth_params):
    dm = RetrievalDataModule(
        tmp_path, "synth_reid", tokenizer, workers=0, synth_params=synth_params["synth_reid"]
    )
    dm.prepare_data()
    dm.setup()
    assert dm.split_counts("train") == (36, 72)
    manifest = (tmp_path / "synth_reid" / "manifest.json").stat().st_mtime_ns
    dm.prepare_data()  # current: not regenerated
    assert (tmp_path / "synth_reid" / "manifest.json").stat().st_mtime_ns == manifest
    RetrievalDataModule(tmp_path, "synth_reid", tokenizer).prepare_data()  # exists: kept even without params
    assert (tmp_path / "synth_reid" / "manifest.json").stat().st_mtime_ns == manifest


class _Recorder(L.LightningModule):
    """Trains a linear probe; records what the loaders deliver."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 1)
        self.train_orders: list[list[int]] = []
        self.val_items: list[dict[int, list[int]]] = []

    def on_train_epoch_start(self) -> None:
        self.train_orders.append([])

    def training_step(self, batch, batch_idx):
        self.train_orders[-1] += batch["caption_index"].tolist()
        return self.head(batch["image"].mean(dim=(2, 3))).pow(2).mean()

    def on_validation_epoch_start(self) -> None:
        self.val_items.append({0: [], 1: []})

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        key = "image_index" if dataloader_idx == 0 else "caption_index"
        self.val_items[-1][dataloader_idx] += batch[key][batch["valid"]].tolist()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


@pytest.mark.parametrize("workers", [0, 2])
def test_lightning_fit_and_validate(synth_root, tokenizer, workers):
    dm = RetrievalDataModule(synth_root, "synth", tokenizer, batch_size=32, workers=workers, image_size=16)
    model = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert trainer.num_training_batches == 320 // 32
    assert len(model.train_orders) == 2
    assert all(sorted(order) == list(range(320)) for order in model.train_orders)
    assert model.train_orders[0] != model.train_orders[1]
    for items in model.val_items:
        assert sorted(items[0]) == list(range(32)) and sorted(items[1]) == list(range(160))
    assert len(dm._loaders) == 0  # teardown stopped the workers
