"""`RetrievalDataModule`: the Lightning DataModule every method trains and evaluates on.

    dm = RetrievalDataModule("data", "synth", tokenizer=open_clip.get_tokenizer("ViT-B-32", context_length=32),
                             batch_size=128, image_size=64)
    trainer.fit(model, datamodule=dm)

- `train_dataloader()`: per-caption batches {image, text, image_index, caption_index, pid}:
  `batch_size` is the global batch, each rank yields its slice of it (batch_size / world_size
  items), exactly `len()` batches on every rank (remainder dropped, reshuffled each epoch), and the
  sequence of global batches does not depend on the world size.
- `val_dataloader()` / `test_dataloader()`: `[image_loader, text_loader]`; image batches
  {image, image_index, pid, valid}, caption batches {text, caption_index, image_index, pid, valid};
  every item once over all ranks, every rank the same number of batches (masked padding).
- `split_counts(split)` / `manifest` / `protocol` let the evaluation assert gathered counts.
- `split_ids(split)`: the source's image ids (gallery order) and caption ids (query order) of a
  split, for id-based protocols (ECCV Caption, CxC) and joins with other tools.

Rank and world size come from the attached Trainer in `setup` (or the explicit `rank` /
`world_size` arguments, which win); never from environment variables. The manifest is checked
in `setup` (one `UserError` naming the command that (re)creates the data). `prepare_data`
generates the built-in synthetic sets when they are missing.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import lightning as L
import numpy as np
import torch

from datamodules.manifest import SYNTHETIC_NAMES, read_manifest, shard_paths
from datamodules.streams import (
    ON_ERROR,
    EpochDataLoader,
    EvalImageStream,
    EvalTextStream,
    TrainStream,
    read_split_ids,
    shard_infos,
)
from datamodules.transforms import AUGMENTATIONS
from xmodal_bench.errors import UserError

__all__ = ["RetrievalDataModule", "shutdown_workers"]

# Our streams' __len__ is exact on every rank and worker by construction (see datamodules.sharding),
# so Lightning's generic caution about IterableDataset lengths does not apply.
warnings.filterwarnings(
    "ignore", message=r"Your `IterableDataset` has `__len__` defined", category=UserWarning
)


class RetrievalDataModule(L.LightningDataModule):
    """Sharded image-text retrieval data (see module docstring).

    Args:
        root: folder holding `{dataset}/manifest.json` and the shards.
        dataset: short dataset name (`coco`, `f30k`, `cuhk`, `icfg`, `rstp`, `synth`, `synth_reid`).
        tokenizer: picklable callable list[str] -> LongTensor [n, L] (runs in the workers).
        batch_size: the global train batch (full batches only), split evenly over the ranks.
        eval_batch_size: eval batch size per rank (default: `batch_size`).
        workers: DataLoader worker processes per loader (0 = load in the main process).
        image_size: int or (height, width) the images are resized to.
        interpolation: resize filter, `bicubic` (CLIP's) or `bilinear` (IRRA's released code).
        augment: train augmentation, `none` or `irra`.
        train_split / val_split / test_split: split names; `None` disables that stage (ICFG has no val).
        shuffle_buffer: train shuffle buffer, in captions (decoded images are shared by their captions).
        seed: seeds the per-epoch shard order and the shuffle buffer.
        rank / world_size: explicit distributed position (tests, custom launchers); default: the Trainer's.
        persistent_workers: keep workers alive between epochs (only when workers > 0).
        pin_memory: default: when CUDA is available.
        prefetch_factor: batches prefetched per worker (only when workers > 0).
        verify: sha256 policy of `read_manifest` (None = hash shards not yet verified on this disk).
        synth_params: for `synth` / `synth_reid` only: generation parameters; `prepare_data` then
            (re)generates the set unless it matches them. Without them a synthetic set is only
            generated (with defaults) when missing.
        on_error: `error` (default): a corrupt shard or sample stops the run with an error naming
            them; `skip`: corrupt training samples are skipped and counted (`skipped_train_samples`).
            Evaluation splits are never skipped: their counts must match the manifest.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str,
        tokenizer: Any,
        batch_size: int = 64,
        eval_batch_size: int | None = None,
        workers: int = 2,
        image_size: int | Sequence[int] = 224,
        augment: str = "none",
        train_split: str | None = "train",
        val_split: str | None = "val",
        test_split: str | None = "test",
        shuffle_buffer: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        persistent_workers: bool = True,
        pin_memory: bool | None = None,
        prefetch_factor: int = 2,
        verify: bool | None = None,
        synth_params: dict[str, Any] | None = None,
        on_error: str = "error",
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__()
        if augment not in AUGMENTATIONS:
            raise UserError(f"unknown augment '{augment}'; choose one of: {', '.join(AUGMENTATIONS)}")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1) or workers < 0:
            raise UserError("batch_size and eval_batch_size must be >= 1 and workers >= 0")
        if on_error not in ON_ERROR:
            raise UserError(f"data.on_error={on_error!r}; choose one of: {', '.join(ON_ERROR)}")
        if (rank is None) != (world_size is None):
            raise ValueError("give both rank and world_size, or neither")
        # No save_hyperparameters(): its captured frame forms a reference cycle that keeps the
        # caller's locals (e.g. DataLoaders with live workers) alive until the next full gc.
        self.root = os.fspath(root)
        self.dataset = dataset
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.workers = workers
        self.image_size = image_size
        self.augment = augment
        self.train_split = train_split
        self.val_split = val_split
        self.test_split = test_split
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self._explicit = (rank, world_size)
        self.rank, self.world_size = (rank, world_size) if rank is not None else (0, 1)
        self.persistent_workers = persistent_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self.prefetch_factor = prefetch_factor
        self.verify = verify
        self.synth_params = synth_params
        self.on_error = on_error
        self.interpolation = interpolation
        self._train_stream: TrainStream | None = None
        self._manifest: dict[str, Any] | None = None
        self._loaders: weakref.WeakSet[torch.utils.data.DataLoader] = weakref.WeakSet()
        self._ids: dict[str, tuple[np.ndarray, np.ndarray] | None] = {}

    # -- Lightning hooks ---------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Generate `synth` / `synth_reid` if missing (or not matching `synth_params`); no-op otherwise."""
        if self.dataset not in SYNTHETIC_NAMES:
            return
        from datamodules.synthetic_sets import ensure_synthetic, generate_synthetic

        if self.synth_params is not None:
            ensure_synthetic(self.root, self.dataset, **self.synth_params)
            return
        try:
            read_manifest(self.root, self.dataset, verify=False)
        except UserError:
            generate_synthetic(self.dataset, self.root)

    def setup(self, stage: str | None = None) -> None:
        """Validate the manifest for the stage's splits and fix rank / world size."""
        if self._explicit[0] is None and self.trainer is not None:
            self.rank, self.world_size = int(self.trainer.global_rank), int(self.trainer.world_size)
        splits = self._splits_for(stage)
        lenient = [self.train_split] if self.on_error == "skip" and self.train_split in splits else []
        self._manifest = read_manifest(
            self.root, self.dataset, verify=self.verify, splits=splits, lenient=lenient
        )

    def train_dataloader(self) -> EpochDataLoader:
        split = self._require(self.train_split, "train")
        stream = TrainStream(
            self._shards(split),
            augment=self.augment,
            shuffle_buffer=self.shuffle_buffer,
            seed=self.seed,
            on_error=self.on_error,
            **self._stream_kw(self.batch_size),
        )
        self._train_stream = stream
        loader = EpochDataLoader(
            stream, epoch_fn=self._trainer_epoch, progress_fn=self._trainer_batches_done, **self._loader_kw()
        )
        return self._track(loader)

    def skipped_train_samples(self) -> int:
        """Training samples (image-caption pairs) skipped as corrupt in the last epoch on this rank
        (always 0 unless `on_error="skip"`)."""
        return self._train_stream.skipped if self._train_stream is not None else 0

    def val_dataloader(self) -> list[torch.utils.data.DataLoader]:
        if self.val_split is None:
            return []
        return self.eval_dataloaders(self.val_split)

    def test_dataloader(self) -> list[torch.utils.data.DataLoader]:
        return self.eval_dataloaders(self._require(self.test_split, "test"))

    # -- public helpers ----------------------------------------------------------------------------
    def eval_dataloaders(self, split: str) -> list[torch.utils.data.DataLoader]:
        """[image_loader, text_loader] over `split` for this rank."""
        shards = self._shards(split)
        kw = self._stream_kw(self.eval_batch_size)
        images = EvalImageStream(shards, **kw)
        texts = EvalTextStream(shards, **kw)
        return [self._track(torch.utils.data.DataLoader(s, **self._loader_kw())) for s in (images, texts)]

    def teardown(self, stage: str | None = None) -> None:
        """Stop the worker processes of every DataLoader this module made (Lightning calls this
        at the end of fit / validate / test).

        Persistent workers otherwise live until their loader is garbage collected; when that
        happens inside a reference-cycle collection, PyTorch's shutdown can wait 5 s per worker.
        """
        for loader in list(self._loaders):
            shutdown_workers(loader)
        self._loaders.clear()

    @property
    def manifest(self) -> dict[str, Any]:
        """The validated manifest (read on first use if `setup` has not run)."""
        if self._manifest is None:
            self._manifest = read_manifest(self.root, self.dataset, verify=self.verify, splits=[])
        return self._manifest

    @property
    def protocol(self) -> str:
        """`caption` (COCO, Flickr30K, synth) or `person` (CUHK, ICFG, RSTP, synth_reid)."""
        return self.manifest["protocol"]

    def split_counts(self, split: str) -> tuple[int, int]:
        """(images, captions) of `split` according to the manifest."""
        info = self._split_info(split)
        return info["images"], info["captions"]

    def split_ids(self, split: str) -> tuple[np.ndarray, np.ndarray] | None:
        """(image ids, caption ids) of `split`, or None when the set carries no ids (manifest format 1).

        Image ids are in gallery order (image index 0..N-1) and caption ids in query order
        (caption index 0..M-1), the orders the evaluation loops gather embeddings in. Ids are
        as the source gives them (COCO: `cocoid` and Karpathy `sentids`; Flickr30K: photo id and
        `sentids`; sets without caption ids: `{image_id}#{k}`): int64 arrays when every id of the
        kind is a decimal integer, else string arrays. Read once per split from the samples'
        metadata (no image decoded) and cached.
        """
        if split not in self._ids:
            ids = read_split_ids(self._shards(split))
            self._ids[split] = None if ids is None else (_id_array(ids[0]), _id_array(ids[1]))
        return self._ids[split]

    def num_pids(self, split: str = "train") -> int:
        """Number of distinct pids in `split` (identities for person sets, images for caption sets)."""
        info = self._split_info(split)
        return info["identities"] if info["identities"] is not None else info["images"]

    # -- internals ---------------------------------------------------------------------------------
    def _split_info(self, split: str) -> dict[str, Any]:
        splits = self.manifest["splits"]
        if split not in splits:
            raise UserError(f"dataset '{self.dataset}' has no split '{split}' (splits: {', '.join(splits)})")
        return splits[split]

    def _splits_for(self, stage: str | None) -> list[str]:
        wanted = {
            "fit": [self.train_split, self.val_split],
            "validate": [self.val_split],
            "test": [self.test_split],
            "predict": [self.test_split],
        }.get(stage or "", [self.train_split, self.val_split, self.test_split])
        return [s for s in dict.fromkeys(wanted) if s is not None]

    def _require(self, split: str | None, what: str) -> str:
        if split is None:
            raise UserError(f"dataset '{self.dataset}': no {what} split configured ({what}_split=None)")
        return split

    def _shards(self, split: str) -> list[Any]:
        self._split_info(split)
        records = self.manifest["splits"][split]["shards"]
        return shard_infos(shard_paths(self.root, self.dataset, self.manifest, split), records)

    def _stream_kw(self, batch_size: int) -> dict[str, Any]:
        return {
            "person": self.protocol == "person",
            "tokenizer": self.tokenizer,
            "batch_size": batch_size,
            "image_size": self.image_size,
            "rank": self.rank,
            "world_size": self.world_size,
            "workers": self.workers,
            "interpolation": self.interpolation,
        }

    def _loader_kw(self) -> dict[str, Any]:
        kw: dict[str, Any] = {"batch_size": None, "num_workers": self.workers, "pin_memory": self.pin_memory}
        if self.workers > 0:
            kw["persistent_workers"] = self.persistent_workers
            kw["prefetch_factor"] = self.prefetch_factor
        return kw

    def _track(self, loader: Any) -> Any:
        if self.workers > 0:
            self._loaders.add(loader)
        return loader

    def _trainer_epoch(self) -> int | None:
        trainer = self.trainer
        return int(trainer.current_epoch) if trainer is not None else None

    def _trainer_batches_done(self) -> int:
        """Batches of the current epoch the trainer has processed (saved in checkpoints to resume)."""
        trainer = self.trainer
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed) if trainer is not None else 0


def _id_array(ids: list[str]) -> np.ndarray:
    """int64 when every id is a decimal integer (COCO, Flickr30K), else a string array."""
    if ids and all(i.isdecimal() and i.isascii() for i in ids):
        return np.array([int(i) for i in ids], dtype=np.int64)
    return np.array(ids, dtype=str)


def shutdown_workers(loader: torch.utils.data.DataLoader) -> None:
    """Stop `loader`'s worker processes now (a no-op for loaders without live workers)."""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
    loader._iterator = None
