"""Train and eval streams through RetrievalDataModule, with simulated ranks and DataLoader workers."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest
import torch
import webdataset as wds
from PIL import Image

import datamodules.streams as streams
from datamodules import RetrievalDataModule
from datamodules.transforms import eval_transform
from xmodal_bench.errors import UserError

BATCH = 16


def _dm(root, tokenizer, dataset="synth", rank=0, world=1, workers=0, **kw):
    kw.setdefault("image_size", 32)
    dm = RetrievalDataModule(
        root, dataset, tokenizer, batch_size=BATCH, workers=workers, rank=rank, world_size=world, **kw
    )
    dm.setup()
    return dm


def _truth(root, dataset, split):
    """[(image_index, captions, pid_json, image_bytes)] read straight from the shards."""
    paths = sorted((root / dataset / split).glob("*.tar"), key=lambda p: int(p.stem))
    paths = [str(p) for p in paths]
    out = []
    for s in wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None):
        meta = json.loads(s["json"])
        out.append((int(s["__key__"].rsplit("-", 1)[1]), meta["captions"], meta["pid"], s["jpg"]))
    return out


def _caption_table(root, dataset, split):
    """caption_index -> (image_index, caption)."""
    table = []
    for image_index, captions, _, _ in _truth(root, dataset, split):
        table.extend((image_index, c) for c in captions)
    return table


def _epoch(loader):
    return [b for b in loader]


def test_train_one_sample_per_caption_per_epoch(synth_root, tokenizer):
    dm = _dm(synth_root, tokenizer)
    loader = dm.train_dataloader()
    table = _caption_table(synth_root, "synth", "train")
    assert dm.split_counts("train") == (64, len(table)) and len(table) == 320
    assert len(loader) == 320 // BATCH
    orders = []
    for _ in range(2):
        batches = _epoch(loader)
        assert len(batches) == len(loader)
        order = torch.cat([b["caption_index"] for b in batches]).tolist()
        assert sorted(order) == list(range(320))  # every caption exactly once
        orders.append(order)
        b = batches[0]
        assert b["image"].shape == (BATCH, 3, 32, 32) and b["image"].dtype == torch.float32
        assert b["text"].shape == (BATCH, 32) and b["text"].dtype == torch.int64
        for key in ("image_index", "caption_index", "pid"):
            assert b[key].shape == (BATCH,) and b[key].dtype == torch.int64
        for batch in batches:
            owners = [table[c][0] for c in batch["caption_index"].tolist()]
            assert batch["image_index"].tolist() == owners
            assert torch.equal(batch["pid"], batch["image_index"])  # caption protocol: pid = image
            expected = tokenizer([table[c][1] for c in batch["caption_index"].tolist()])
            assert torch.equal(batch["text"], expected)
    assert orders[0] != orders[1]  # reshuffled every epoch


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [2, 4])
def test_train_equal_full_batches_on_every_rank(synth_root, tokenizer, world, workers):
    steps = 320 // BATCH  # BATCH is the global batch: the same number of steps at any world size
    seen = []
    for rank in range(world):
        loader = _dm(synth_root, tokenizer, rank=rank, world=world, workers=workers).train_dataloader()
        assert len(loader) == steps
        batches = _epoch(loader)
        assert len(batches) == steps
        assert all(b["image"].shape[0] == BATCH // world for b in batches)
        seen += torch.cat([b["caption_index"] for b in batches]).tolist()
    assert len(seen) == len(set(seen)) == steps * BATCH  # no caption twice in an epoch


@pytest.mark.parametrize("workers", [0, 2])
def test_global_batches_are_the_same_at_any_world_size(synth_root, tokenizer, workers):
    """The ranks' batches t together are the 1-rank batch t: the same experiment on N devices."""
    single = _epoch(_dm(synth_root, tokenizer, workers=workers).train_dataloader())
    for world in (2, 4):
        ranks = [
            _epoch(_dm(synth_root, tokenizer, rank=r, world=world, workers=workers).train_dataloader())
            for r in range(world)
        ]
        for step, whole in enumerate(single):
            joined = {k: torch.cat([batches[step][k] for batches in ranks]) for k in whole}
            order = joined["caption_index"].argsort()
            expected = whole["caption_index"].argsort()
            for key in ("image", "text", "image_index", "caption_index", "pid"):
                torch.testing.assert_close(joined[key][order], whole[key][expected])


def test_a_global_batch_that_does_not_split_is_one_line(synth_root, tokenizer):
    with pytest.raises(
        UserError, match=r"data.batch_size=16 \(the global batch\) cannot be split evenly over 3"
    ):
        _dm(synth_root, tokenizer, rank=0, world=3).train_dataloader()


def test_each_rank_decodes_only_its_slice(synth_root, tokenizer, monkeypatch):
    decoded: list[int] = []
    real = streams.decode_image
    monkeypatch.setattr(streams, "decode_image", lambda data: (decoded.append(1), real(data))[1])
    _epoch(_dm(synth_root, tokenizer).train_dataloader())
    single = len(decoded)
    decoded.clear()
    _epoch(_dm(synth_root, tokenizer, rank=1, world=4).train_dataloader())
    # a quarter of the captions, and an image's captions kept together: well under half the images
    assert 0 < len(decoded) < single / 2


def test_train_reshuffles_with_persistent_workers(synth_root, tokenizer):
    loader = _dm(synth_root, tokenizer, workers=2).train_dataloader()
    assert loader.persistent_workers
    a = torch.cat([b["caption_index"] for b in _epoch(loader)]).tolist()
    b = torch.cat([b["caption_index"] for b in _epoch(loader)]).tolist()
    assert sorted(a) == sorted(b) == list(range(320)) and a != b
    # an explicit epoch is reproducible
    loader.dataset.set_epoch(0)
    first = _dm(synth_root, tokenizer, workers=2).train_dataloader()
    assert torch.cat([x["caption_index"] for x in _epoch(first)]).tolist() == a


def test_train_batches_avoid_captions_of_the_same_image(synth_root, tokenizer):
    loader = _dm(synth_root, tokenizer).train_dataloader()
    duplicates = sum(BATCH - len(set(b["image_index"].tolist())) for _ in range(3) for b in _epoch(loader))
    # 5 captions per image: an unconstrained shuffle would put ~5 same-image pairs in every batch
    assert duplicates <= 3 * len(loader) * 0.5


def test_train_person_pids_from_json(synth_root, tokenizer):
    truth = {i: pid for i, _, pid, _ in _truth(synth_root, "synth_reid", "train")}
    dm = _dm(synth_root, tokenizer, dataset="synth_reid", image_size=(48, 16))
    assert dm.protocol == "person" and dm.num_pids("train") == 12
    batches = _epoch(dm.train_dataloader())
    assert batches[0]["image"].shape[-2:] == (48, 16)
    for b in batches:
        assert b["pid"].tolist() == [truth[i] for i in b["image_index"].tolist()]
    assert sorted({p for b in batches for p in b["pid"].tolist()}) == list(range(12))


def test_train_images_without_augment_equal_eval_images(synth_root, tokenizer):
    dm = _dm(synth_root, tokenizer)
    train = _epoch(dm.train_dataloader())[0]
    truth = _truth(synth_root, "synth", "train")
    transform = eval_transform(32)
    for image, index in zip(train["image"], train["image_index"].tolist(), strict=True):
        expected = transform(Image.open(__import__("io").BytesIO(truth[index][3])).convert("RGB"))
        torch.testing.assert_close(image, expected.as_subclass(torch.Tensor), atol=1e-5, rtol=0)


def test_irra_augmentation_differs_per_caption(synth_root, tokenizer):
    dm = _dm(synth_root, tokenizer, augment="irra", shuffle_buffer=1)
    batch = _epoch(dm.train_dataloader())[0]
    by_image: dict[int, list[torch.Tensor]] = {}
    for image, index in zip(batch["image"], batch["image_index"].tolist(), strict=True):
        by_image.setdefault(index, []).append(image)
    pairs = [v for v in by_image.values() if len(v) > 1]
    assert pairs and any(not torch.equal(v[0], v[1]) for v in pairs)


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_streams_cover_every_item_once(synth_root, tokenizer, world, workers):
    table = _caption_table(synth_root, "synth_reid", "test")
    truth = {i: pid for i, _, pid, _ in _truth(synth_root, "synth_reid", "test")}
    images, captions = Counter(), Counter()
    counts = set()
    for rank in range(world):
        dm = _dm(
            synth_root,
            tokenizer,
            dataset="synth_reid",
            rank=rank,
            world=world,
            workers=workers,
            image_size=(48, 16),
            eval_batch_size=8,
        )
        image_loader, text_loader = dm.test_dataloader()
        image_batches, text_batches = _epoch(image_loader), _epoch(text_loader)
        assert len(image_batches) == len(image_loader) and len(text_batches) == len(text_loader)
        counts.add((len(image_batches), len(text_batches)))
        for b in image_batches:
            assert b["image"].shape == (8, 3, 48, 16)
            valid = b["valid"]
            assert (b["image_index"][~valid] == -1).all() and (b["pid"][~valid] == -1).all()
            assert (b["image"][~valid] == 0).all()
            for i, pid in zip(b["image_index"][valid].tolist(), b["pid"][valid].tolist(), strict=True):
                images[i] += 1
                assert pid == truth[i]
        empty = tokenizer([""])[0]
        for b in text_batches:
            valid = b["valid"]
            assert (b["caption_index"][~valid] == -1).all() and (b["image_index"][~valid] == -1).all()
            assert all(torch.equal(row, empty) for row in b["text"][~valid])
            for c, i, pid, ids in zip(
                b["caption_index"][valid].tolist(),
                b["image_index"][valid].tolist(),
                b["pid"][valid].tolist(),
                b["text"][valid],
                strict=True,
            ):
                captions[c] += 1
                assert table[c][0] == i and pid == truth[i]
                assert torch.equal(ids, tokenizer([table[c][1]])[0])
    assert len(counts) == 1  # every rank yields the same number of batches
    assert images == Counter(range(dm.split_counts("test")[0]))
    assert captions == Counter(range(len(table)))


def test_caption_stream_never_decodes_images(synth_root, tokenizer, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("the caption stream decoded an image")

    monkeypatch.setattr(streams, "decode_image", fail)
    monkeypatch.setattr(Image, "open", fail)
    _, text_loader = _dm(synth_root, tokenizer).test_dataloader()
    assert sum(int(b["valid"].sum()) for b in text_loader) == 240
    shard = sorted((synth_root / "synth" / "test").glob("*.tar"))[0]
    sample = next(streams._read_shard(str(shard), json_only=True))
    assert "jpg" not in sample and "json" in sample


def test_eval_images_are_eval_transformed(synth_root, tokenizer):
    image_loader, _ = _dm(synth_root, tokenizer).val_dataloader()
    batch = next(iter(image_loader))
    truth = _truth(synth_root, "synth", "val")
    for image, index in zip(batch["image"], batch["image_index"].tolist(), strict=True):
        expected = eval_transform(32)(Image.open(__import__("io").BytesIO(truth[index][3])).convert("RGB"))
        torch.testing.assert_close(image, expected.as_subclass(torch.Tensor), atol=1e-5, rtol=0)


def test_streams_pickle(synth_root, tokenizer):
    dm = _dm(synth_root, tokenizer, augment="irra")
    for loader in [dm.train_dataloader(), *dm.val_dataloader()]:
        clone = pickle.loads(pickle.dumps(loader.dataset))
        assert len(clone) == len(loader.dataset)


def test_worker_count_mismatch_is_an_error(synth_root, tokenizer):
    dm = _dm(synth_root, tokenizer, workers=2)
    stream = dm.train_dataloader().dataset
    with pytest.raises(RuntimeError, match="planned for 2"):
        next(iter(torch.utils.data.DataLoader(stream, batch_size=None, num_workers=0)))


def test_batch_larger_than_the_split_is_a_user_error(synth_root, tokenizer):
    dm = RetrievalDataModule(synth_root, "synth", tokenizer, batch_size=400, workers=0)
    dm.setup("fit")
    with pytest.raises(UserError, match="lower the batch size"):
        dm.train_dataloader()
