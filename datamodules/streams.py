"""The iterable datasets behind `RetrievalDataModule`: one train stream, two eval streams.

All three batch inside the dataset (use them with `DataLoader(batch_size=None)`), know their exact
`len()` in batches from the manifest, and take the rank / world size / DataLoader worker count
they run under as explicit arguments (webdataset's own splitters are switched off: the split is
planned in `datamodules.sharding`). Shards are read with `webdataset.WebDataset` one at a time,
with `nodesplitter=None, workersplitter=None, shardshuffle=False, empty_check=False`.

Train (`TrainStream`, per caption): `batch_size` is the *global* batch, as the papers state it;
each of N ranks yields its share of every global batch (batch_size / N items; the N shares are
the global batch). Every rank reads the same shards in the same order through the same seeded shuffle buffer,
so the sequence of global batches is the same at any world size, and decodes (and augments) only
the images of its own slice (`rank_slice`: an image's captions go to one rank where there is
room, so it is decoded there only): reading is repeated on every rank, decoding is not
(decoding, not reading, is what costs: see the README's performance section). Each image is decoded and resized
at most once per rank, then each of its captions becomes a sample with its own random
augmentation. Per epoch the shard order is reshuffled (seeded by `seed` and the epoch), samples
pass a shuffle buffer, and a global batch never holds two captions of the same image while the
buffer offers an alternative (an image's own captions are false negatives for in-batch
contrastive losses). Every rank yields exactly `len(stream)` batches; the remainder is dropped
(see `sharding.train_plan`). DataLoader workers split the global batches between them; the
sequence depends on the worker count, not on the rank count.

Eval (`EvalImageStream`, `EvalTextStream`): every image / caption exactly once over all ranks and
workers, in manifest order within a slot, each item with its global index. Every slot yields the
same number of batches, padded with masked items (`valid=False`, indices and pid -1, zero image,
the tokenized empty string as text). The caption stream reads only the `json` member of each
sample and never decodes an image.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import webdataset as wds
from PIL import Image
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from datamodules.sharding import EvalPlan, Segment, eval_plan, train_plan
from datamodules.transforms import (
    augment_transform,
    erase_transform,
    normalize_transform,
    resize_transform,
    to_hw,
)
from xmodal_bench.errors import UserError

__all__ = [
    "ON_ERROR",
    "CorruptDataError",
    "EpochDataLoader",
    "EvalImageStream",
    "EvalTextStream",
    "ShardInfo",
    "TrainStream",
    "decode_image",
    "read_split_ids",
]

Tokenizer = Callable[[list[str]], torch.Tensor]
IMAGE_KEYS = ("jpg", "png", "webp", "jpeg")
ON_ERROR = ("error", "skip")
_log = logging.getLogger("xmodal_bench.data")
_warned: set[str] = set()  # per process: each skipped sample is reported once, not every epoch


class CorruptDataError(UserError):
    """A shard or a sample that cannot be read (broken tar, bad metadata, undecodable image)."""


def _corrupt(path: str, key: str | None, position: int, why: str, fix: str) -> CorruptDataError:
    sample = f"sample {key} (position {position} in the shard)" if key else f"sample at position {position}"
    why = " ".join(why.split())  # one line, whatever the underlying library put in its message
    return CorruptDataError(f"corrupt data in shard {path}, {sample}: {why}; {fix}")


TRAIN_FIX = "re-create the dataset (its manifest names the command), or set data.on_error=skip to skip bad training samples"
EVAL_FIX = "re-create the dataset (its manifest names the command); evaluation splits are never skipped"


@dataclass(frozen=True)
class ShardInfo:
    """What a stream needs to know about one shard (from the manifest)."""

    path: str
    images: int
    captions: int
    image_offset: int  # index of its first image in the split
    caption_offset: int  # index of its first caption in the split


def shard_infos(paths: Sequence[os.PathLike | str], records: Sequence[dict[str, Any]]) -> list[ShardInfo]:
    """Combine manifest shard records (in order) with their paths and split-level offsets."""
    out, img, cap = [], 0, 0
    for path, rec in zip(paths, records, strict=True):
        out.append(ShardInfo(str(path), rec["images"], rec["captions"], img, cap))
        img += rec["images"]
        cap += rec["captions"]
    return out


def decode_image(data: bytes) -> Image.Image:
    """Encoded bytes -> RGB PIL image (the only place the data layer decodes pixels)."""
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB")


def _read_shard(path: str, json_only: bool = False) -> Iterator[dict[str, Any]]:
    """Samples of one shard in order; `json_only` skips image bytes at the tar level."""
    select = (lambda name: name.endswith(".json")) if json_only else None
    yield from wds.WebDataset(
        [path],
        shardshuffle=False,
        nodesplitter=None,
        workersplitter=None,
        empty_check=False,
        select_files=select,
        seed=0,
    )


@dataclass
class _Sample:
    image_index: int
    meta: dict[str, Any]
    data: dict[str, Any]
    shard: str = ""
    position: int = 0

    @property
    def key(self) -> str:
        return str(self.data.get("__key__"))

    def decode(self, fix: str) -> Image.Image:
        """The sample's image as RGB, or a `CorruptDataError` naming the shard and the sample."""
        data = next((self.data[k] for k in IMAGE_KEYS if k in self.data), None)
        if data is None:
            raise _corrupt(self.shard, self.key, self.position, "no image member", fix)
        try:
            return decode_image(data)
        except Exception as exc:  # PIL raises several types for bad bytes
            raise _corrupt(self.shard, self.key, self.position, f"undecodable image ({exc})", fix) from None


def _parse(shard: ShardInfo, position: int, data: dict[str, Any], fix: str) -> _Sample:
    """Check one raw sample against the manifest (key = split index) and parse its metadata."""
    key = data.get("__key__")
    try:
        index = int(str(key).rsplit("-", 1)[1])
    except (IndexError, ValueError):
        raise _corrupt(shard.path, None, position, f"bad sample key {key!r}", fix) from None
    if index != shard.image_offset + position:
        raise _corrupt(shard.path, key, position, "sample key does not match the manifest's order", fix)
    try:
        meta = json.loads(data["json"])
        captions = meta["captions"]
        if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
            raise TypeError("captions must be a list of strings")
    except Exception as exc:
        why = "no json member" if "json" not in data else f"unreadable metadata ({type(exc).__name__}: {exc})"
        raise _corrupt(shard.path, key, position, why, fix) from None
    return _Sample(index, meta, data, shard.path, position)


def _samples(
    shard: ShardInfo, stop_image: int, json_only: bool = False, fix: str = EVAL_FIX
) -> Iterator[tuple[int, _Sample]]:
    """(position in shard, sample) for positions < stop_image; checks keys and counts against the manifest.

    Anything unreadable (a broken or truncated tar, a missing shard, bad metadata, a key out of
    order) raises `CorruptDataError` naming the shard and the sample; `fix` ends its message.
    """
    if stop_image <= 0:
        return
    position = -1
    raw = _read_shard(shard.path, json_only)
    while True:
        try:
            data = next(raw, None)
        except Exception as exc:  # tarfile / webdataset / OS errors while reading the shard
            raise _corrupt(
                shard.path, None, position + 1, f"unreadable shard ({type(exc).__name__}: {exc})", fix
            ) from None
        if data is None:
            break
        position += 1
        yield position, _parse(shard, position, data, fix)
        if position + 1 >= stop_image:
            return
    if position + 1 != shard.images:
        raise _corrupt(
            shard.path,
            None,
            position + 1,
            f"shard ends after {position + 1} samples, the manifest says {shard.images}",
            fix,
        )


def read_split_ids(shards: Sequence[ShardInfo]) -> tuple[list[str], list[str]] | None:
    """(image ids in image-index order, caption ids in caption-index order) of a split, read from
    the samples' `json` (no image is decoded); None when the samples carry no caption ids (format 1)."""
    image_ids: list[str] = []
    caption_ids: list[str] = []
    for shard in shards:
        for _, sample in _samples(shard, shard.images, json_only=True):
            ids = sample.meta.get("caption_ids")
            if ids is None:
                return None
            if not isinstance(ids, list) or len(ids) != len(sample.meta["captions"]):
                raise _corrupt(
                    shard.path, sample.key, sample.position, "caption_ids do not match the captions", EVAL_FIX
                )
            image_ids.append(str(sample.meta.get("image_id")))
            caption_ids.extend(str(i) for i in ids)
    return image_ids, caption_ids


def _caption_items(
    shards: Sequence[ShardInfo],
    segments: Sequence[Segment],
    json_only: bool,
    fix: str = EVAL_FIX,
    skip: Callable[[CorruptDataError, int], None] | None = None,
) -> Iterator[tuple[_Sample, list[tuple[int, str]]]]:
    """For caption-unit segments: (sample, [(global caption index, caption), ...]) with >= 1 caption kept.

    A shard that breaks mid-way raises `CorruptDataError`, or with `skip` the rest of the segment is
    given up (sample boundaries after an unreadable sample are unknown) and `skip(error, captions
    lost)` is called.
    """
    for seg in segments:
        shard = shards[seg.shard]
        position = 0  # caption position in the shard
        try:
            for _, sample in _samples(shard, shard.images, json_only, fix):
                captions = sample.meta["captions"]
                first, position = position, position + len(captions)
                if position <= seg.lo:
                    continue
                kept = [
                    (shard.caption_offset + first + k, c)
                    for k, c in enumerate(captions)
                    if seg.lo <= first + k < seg.hi
                ]
                if kept:
                    yield sample, kept
                if position >= seg.hi:
                    break
        except CorruptDataError as exc:
            if skip is None:
                raise
            skip(exc, seg.hi - max(seg.lo, position))


def _pid(sample: _Sample, person: bool) -> int:
    if not person:
        return sample.image_index
    pid = sample.meta.get("pid")
    if not isinstance(pid, int):
        raise _corrupt(sample.shard, sample.key, sample.position, f"person sample with pid {pid!r}", EVAL_FIX)
    return pid


def _worker(planned_workers: int) -> int:
    info = get_worker_info()
    workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
    if workers != max(1, planned_workers):
        raise RuntimeError(
            f"stream planned for {max(1, planned_workers)} DataLoader worker(s) per rank, running with {workers}; "
            "build the DataLoader with the same num_workers (RetrievalDataModule does)"
        )
    return worker


class _Stream(IterableDataset):
    """Shared configuration: shards, rank / world size / workers, batch size, tokenizer."""

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        *,
        person: bool,
        tokenizer: Tokenizer,
        batch_size: int,
        image_size: int | Sequence[int],
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        interpolation: str = "bicubic",
    ) -> None:
        super().__init__()
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.shards = list(shards)
        self.person = person
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.image_size = to_hw(image_size)
        self.interpolation = interpolation
        self.rank = rank
        self.world_size = world_size
        self.workers = workers

    def _tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts)
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] != len(texts):
            raise TypeError("tokenizer must map list[str] to a LongTensor [n, L]")
        return ids.long()


class TrainStream(_Stream):
    """Per-caption training batches: image, text, image_index, caption_index, pid (see module docstring)."""

    def __init__(
        self,
        shards: Sequence[ShardInfo],
        *,
        augment: str = "none",
        shuffle_buffer: int = 1000,
        seed: int = 0,
        on_error: str = "error",
        **kw: Any,
    ) -> None:
        super().__init__(shards, **kw)
        if on_error not in ON_ERROR:
            raise UserError(f"data.on_error={on_error!r}; choose one of: {', '.join(ON_ERROR)}")
        self.on_error = on_error
        # training samples (image, caption pairs) skipped in the current epoch, one slot per worker;
        # shared memory, so the main process sees what the DataLoader workers counted
        self._skipped = torch.zeros(max(1, self.workers), dtype=torch.int64).share_memory_()
        self.prepare = resize_transform(self.image_size, self.interpolation)
        self.augment = augment_transform(self.image_size, augment)
        self.normalize = normalize_transform()
        self.erase = erase_transform(augment)
        self.shuffle_buffer = max(1, shuffle_buffer)
        self.seed = seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # seen by persistent workers
        if self.batch_size % self.world_size:
            raise UserError(
                f"data.batch_size={self.batch_size} (the global batch) cannot be split evenly over "
                f"{self.world_size} devices; choose a multiple of {self.world_size}"
            )
        self.local_batch_size = self.batch_size // self.world_size
        total = sum(s.captions for s in self.shards)
        self._len = total // self.batch_size
        if self._len == 0:
            raise UserError(
                f"{total} captions cannot fill one batch of {self.batch_size}; lower the batch size"
            )

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shard order / shuffle to produce next (also seen by persistent workers)."""
        self._epoch.fill_(int(epoch))

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    @property
    def skipped(self) -> int:
        """Training samples (image-caption pairs) skipped as corrupt in the current epoch, all workers."""
        return int(self._skipped.sum().item())

    def _skip(self, worker: int, error: CorruptDataError, captions: int) -> None:
        self._skipped[worker] += captions
        message = str(error).split("; ", 1)[0]
        if message not in _warned:
            _warned.add(message)
            _log.warning("data.on_error=skip: skipped %d training sample(s): %s", captions, message)

    def __len__(self) -> int:
        return self._len

    def plan(self, epoch: int) -> Any:
        return train_plan([s.captions for s in self.shards], self.workers, self.batch_size, self.seed, epoch)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = _worker(self.workers)
        epoch = self.epoch
        plan = self.plan(epoch)
        n_batches = plan.batches[worker]
        if n_batches == 0:
            return
        rng = random.Random(f"train-buffer/{self.seed}/{epoch}/{worker}")  # the same on every rank
        self._skipped[worker] = 0
        items = self._items(plan.segments[worker], worker)
        produced, last = 0, None
        for batch in _distinct_image_batches(items, self.shuffle_buffer, self.batch_size, rng):
            last = rank_slice(batch, self.rank, self.world_size)
            yield self._collate(last, worker)
            produced += 1
        if produced < n_batches and self.on_error == "skip":
            # Unreadable shards left this worker short (on every rank alike): repeat its last batch
            # (freshly augmented) so every rank still takes the planned number of steps.
            if last is None:
                raise UserError(
                    f"data.on_error=skip: every training sample of worker {worker} was unreadable; "
                    "re-create the dataset"
                )
            for _ in range(n_batches - produced):
                yield self._collate(last, worker)
            produced = n_batches
        if produced != n_batches:
            raise RuntimeError(
                f"train stream produced {produced} batches, planned {n_batches}: shards changed?"
            )

    def _items(
        self, segments: Sequence[Segment], worker: int = 0
    ) -> Iterator[tuple[_LazyImage, str, int, int, int]]:
        skip = None
        if self.on_error == "skip":

            def skip(error: CorruptDataError, captions: int) -> None:
                if self.rank == 0:  # every rank reads the same metadata: count it once
                    self._skip(worker, error, captions)

        for sample, kept in _caption_items(self.shards, segments, json_only=False, fix=TRAIN_FIX, skip=skip):
            try:
                pid = _pid(sample, self.person)
            except CorruptDataError as exc:
                if skip is None:
                    raise
                skip(exc, len(kept))
                continue
            image = _LazyImage(sample, self.prepare)  # decoded only by the rank whose slice uses it
            for caption_index, caption in kept:
                yield image, caption, sample.image_index, caption_index, pid

    def _decoded(self, batch: list[tuple], worker: int) -> list[tuple[torch.Tensor, tuple]]:
        """(image tensor, item) of each item; under `on_error=skip` an undecodable image is
        counted and its place taken by another item of the slice."""
        out, bad = [], []
        for item in batch:
            try:
                out.append((item[0].get(), item))
            except CorruptDataError as exc:
                if self.on_error != "skip":
                    raise
                self._skip(worker, exc, 1)
                bad.append(item)
        if not out:
            raise UserError(
                f"data.on_error=skip: every image of a training batch on rank {self.rank} was "
                "unreadable; re-create the dataset"
            )
        return out + [out[i % len(out)] for i in range(len(bad))]

    def _collate(self, batch: list[tuple], worker: int = 0) -> dict[str, torch.Tensor]:
        # = train_transform per item, with the normalisation done once for the whole batch
        decoded = self._decoded(batch, worker)
        aug = self.augment
        images = torch.stack(
            [(aug(x) if aug is not None else x).as_subclass(torch.Tensor) for x, _ in decoded]
        )
        images = self.normalize(images)
        if self.erase is not None:
            images = torch.stack([self.erase(x) for x in images])
        items = [item for _, item in decoded]
        return {
            "image": images,
            "text": self._tokenize([item[1] for item in items]),
            "image_index": torch.tensor([item[2] for item in items], dtype=torch.int64),
            "caption_index": torch.tensor([item[3] for item in items], dtype=torch.int64),
            "pid": torch.tensor([item[4] for item in items], dtype=torch.int64),
        }


def rank_slice(batch: list[tuple], rank: int, world_size: int) -> list[tuple]:
    """Rank `rank`'s share of a global batch: len(batch) / world_size items.

    Every caption of an image goes, where there is room, to the same rank (its preferred rank,
    `image_index % world_size`), so an image is decoded by one rank rather than by every rank that
    meets one of its captions; items that find their preferred rank full go to the next rank with
    room. The assignment is a pure function of the batch, computed alike on every rank; with one
    rank the slice is the whole batch, in order.
    """
    if world_size == 1:
        return batch
    capacity = len(batch) // world_size
    slots: list[list[tuple]] = [[] for _ in range(world_size)]
    overflow = []
    for item in batch:
        preferred = slots[item[2] % world_size]
        (preferred if len(preferred) < capacity else overflow).append(item)
    free = (r for r in range(world_size) for _ in range(capacity - len(slots[r])))
    for item, r in zip(overflow, free, strict=True):
        slots[r].append(item)
    return slots[rank]


class _LazyImage:
    """A training sample's image, decoded and resized on first use and kept for its other captions."""

    __slots__ = ("_image", "_prepare", "_sample")

    def __init__(self, sample: _Sample, prepare: Callable[[Image.Image], Any]) -> None:
        self._sample, self._prepare, self._image = sample, prepare, None

    def get(self) -> Any:
        if self._image is None:
            self._image = self._prepare(self._sample.decode(TRAIN_FIX))
            self._sample = None  # the encoded bytes are no longer needed
        return self._image


def _distinct_image_batches(
    items: Iterator[tuple], buffer_size: int, batch_size: int, rng: random.Random, tries: int = 8
) -> Iterator[list[tuple]]:
    """Shuffle through a buffer and cut batches, avoiding two items of one image in a batch.

    An item is drawn at random from the buffer; if its image (item[2]) is already in the current
    batch, up to `tries` other random draws are made before accepting the duplicate. Yields only
    full batches; a final partial batch is dropped (callers plan multiples of `batch_size`).
    """
    buf: list[tuple] = []
    batch: list[tuple] = []
    in_batch: set[int] = set()

    def take() -> tuple:
        j = rng.randrange(len(buf))
        for _ in range(tries):
            if buf[j][2] not in in_batch:
                break
            j = rng.randrange(len(buf))
        item = buf[j]
        buf[j] = buf[-1]
        buf.pop()
        return item

    def pending() -> Iterator[tuple]:
        for item in items:
            buf.append(item)
            if len(buf) >= buffer_size:
                yield take()
        while buf:
            yield take()

    for item in pending():
        batch.append(item)
        in_batch.add(item[2])
        if len(batch) == batch_size:
            yield batch
            batch, in_batch = [], set()


class _EvalStream(_Stream):
    """Common part of the two eval streams: plan, padding, batch counting."""

    unit = "images"

    def __init__(self, shards: Sequence[ShardInfo], **kw: Any) -> None:
        super().__init__(shards, **kw)
        sizes = [getattr(s, self.unit) for s in self.shards]
        self.plan: EvalPlan = eval_plan(sizes, self.world_size, self.workers, self.batch_size)

    def __len__(self) -> int:
        return self.plan.workers * self.plan.batches_per_slot

    @property
    def num_items(self) -> int:
        return sum(getattr(s, self.unit) for s in self.shards)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        worker = _worker(self.workers)
        slot = self.plan.slot(self.rank, worker)
        items = self._items(self.plan.segments[slot])
        padded = itertools.chain(items, itertools.repeat(None))
        for _ in range(self.plan.batches_per_slot):
            yield self._collate([next(padded) for _ in range(self.batch_size)])
        leftover = next(items, None)
        if leftover is not None:
            raise RuntimeError("eval stream has more items than planned: shards changed?")

    def _items(self, segments: Sequence[Segment]) -> Iterator[tuple]:
        raise NotImplementedError

    def _collate(self, batch: list[tuple | None]) -> dict[str, torch.Tensor]:
        raise NotImplementedError


class EvalImageStream(_EvalStream):
    """Every image once: batches of image [B,3,H,W], image_index, pid, valid."""

    unit = "images"

    def __init__(self, shards: Sequence[ShardInfo], **kw: Any) -> None:
        super().__init__(shards, **kw)
        # = eval_transform per image, with the normalisation done once per batch
        self.resize = resize_transform(self.image_size, self.interpolation)
        self.normalize = normalize_transform()

    def _items(self, segments: Sequence[Segment]) -> Iterator[tuple]:
        for seg in segments:
            for position, sample in _samples(self.shards[seg.shard], seg.hi):
                if position >= seg.lo:
                    image = self.resize(sample.decode(EVAL_FIX)).as_subclass(torch.Tensor)
                    yield image, sample.image_index, _pid(sample, self.person)

    def _collate(self, batch: list[tuple | None]) -> dict[str, torch.Tensor]:
        blank = torch.zeros(3, *self.image_size, dtype=torch.uint8)
        valid = torch.tensor([item is not None for item in batch], dtype=torch.bool)
        images = self.normalize(torch.stack([blank if item is None else item[0] for item in batch]))
        images[~valid] = 0.0  # padding: an all-zero image
        return {
            "image": images,
            "image_index": torch.tensor(
                [-1 if item is None else item[1] for item in batch], dtype=torch.int64
            ),
            "pid": torch.tensor([-1 if item is None else item[2] for item in batch], dtype=torch.int64),
            "valid": valid,
        }


class EvalTextStream(_EvalStream):
    """Every caption once: batches of text [B,L], caption_index, image_index (owner), pid, valid."""

    unit = "captions"

    def _items(self, segments: Sequence[Segment]) -> Iterator[tuple]:
        for sample, kept in _caption_items(self.shards, segments, json_only=True):
            pid = _pid(sample, self.person)
            for caption_index, caption in kept:
                yield caption, caption_index, sample.image_index, pid

    def _collate(self, batch: list[tuple | None]) -> dict[str, torch.Tensor]:
        # padding rows: the tokenized empty string, a well-formed sequence for any text encoder
        texts = ["" if item is None else item[0] for item in batch]
        return {
            "text": self._tokenize(texts),
            "caption_index": torch.tensor(
                [-1 if item is None else item[1] for item in batch], dtype=torch.int64
            ),
            "image_index": torch.tensor(
                [-1 if item is None else item[2] for item in batch], dtype=torch.int64
            ),
            "pid": torch.tensor([-1 if item is None else item[3] for item in batch], dtype=torch.int64),
            "valid": torch.tensor([item is not None for item in batch], dtype=torch.bool),
        }


class EpochDataLoader(DataLoader):
    """A DataLoader that tells its `TrainStream` which epoch starts each time it is iterated, and
    that resumes mid-epoch exactly where a checkpoint left off.

    `epoch_fn()` (e.g. the Trainer's `current_epoch`) wins when it returns an int; otherwise the
    loader counts its own iterations. Needed because Lightning only calls `set_epoch` on samplers,
    and an iterable dataset has none.

    Resuming: Lightning saves `state_dict()` in every checkpoint (`progress_fn()` = batches of the
    epoch the trainer has completed) and hands it back through `load_state_dict` when it restarts
    from one. The next iteration of that epoch then skips those batches: the stream's order is a
    pure function of (seed, epoch, rank, worker), so the run continues with exactly the batches it
    would have seen had it not been interrupted.
    """

    def __init__(
        self,
        dataset: TrainStream,
        *args: Any,
        epoch_fn: Callable[[], int | None] | None = None,
        progress_fn: Callable[[], int] | None = None,
        **kw: Any,
    ):
        super().__init__(dataset, *args, **kw)
        self._epoch_fn = epoch_fn
        self._progress_fn = progress_fn
        self._next_epoch = 0
        self._current_epoch = 0
        self._resume: tuple[int, int] | None = None

    def state_dict(self) -> dict[str, int]:
        done = self._progress_fn() if self._progress_fn is not None else 0
        return {"epoch": self._current_epoch, "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = (int(state.get("epoch", -1)), int(state.get("batches", 0)))

    def __iter__(self) -> Any:
        epoch = self._epoch_fn() if self._epoch_fn is not None else None
        if epoch is None:
            epoch = self._next_epoch
        self.dataset.set_epoch(epoch)  # type: ignore[attr-defined]
        self._next_epoch = epoch + 1
        self._current_epoch = epoch
        skip = 0
        if self._resume is not None:
            resume_epoch, batches = self._resume
            self._resume = None
            if resume_epoch == epoch and 0 < batches < len(self.dataset):  # type: ignore[arg-type]
                skip = batches
        iterator = super().__iter__()
        for _ in range(skip):
            next(iterator)
        return iterator
