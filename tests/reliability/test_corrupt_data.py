"""Corrupt data, provoked for real: undecodable images, garbled and truncated shards, sha256 mismatches.

Default: one clear error naming the shard and the sample. `data.on_error=skip`: training goes on,
skips and counts what it cannot read (and `results.json` records the count); evaluation splits
are never skipped.
"""

from __future__ import annotations

import json
import tarfile

import pytest

from datamodules import RetrievalDataModule
from datamodules.streams import CorruptDataError
from xmodal_bench.cli import main
from xmodal_bench.errors import UserError

from .helpers import (
    assert_one_line_error,
    bench_argv,
    copy_as,
    refresh_manifest,
    results_files,
    rewrite_shard,
)

BAD_KEY = "train-00000010"  # third sample of train/1.tar (8 images per shard)


def _break_image(dataset_dir, split: str = "train", key: str = BAD_KEY, shard: str = "1.tar"):
    rewrite_shard(
        dataset_dir / split / shard,
        lambda name, data: b"this is not a jpeg" if name.startswith(key) and name.endswith(".jpg") else None,
    )
    refresh_manifest(dataset_dir)


def _datamodule(root, tokenizer, **kw) -> RetrievalDataModule:
    kw = {"batch_size": 16, "workers": 0, "image_size": 64, "persistent_workers": False, **kw}
    return RetrievalDataModule(root, "f30k", tokenizer, **kw)


def _train_batches(dm: RetrievalDataModule) -> list[dict]:
    dm.setup("fit")
    loader = dm.train_dataloader()
    batches = list(loader)
    dm.teardown("fit")
    assert len(batches) == len(loader)  # every rank still takes the planned number of steps
    return batches


@pytest.mark.parametrize("workers", [0, 1])
def test_undecodable_image_names_shard_and_sample(synth_root, tmp_path, tokenizer, workers) -> None:
    data = copy_as(synth_root, "synth", tmp_path, "f30k")
    _break_image(data)
    with pytest.raises(CorruptDataError) as info:
        _train_batches(_datamodule(tmp_path, tokenizer, workers=workers))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message  # also when raised in a DataLoader worker
    assert f"shard {data / 'train' / '1.tar'}, sample {BAD_KEY}" in message
    assert "undecodable image" in message and "data.on_error=skip" in message


@pytest.mark.parametrize("workers", [0, 2])
def test_skip_goes_on_and_counts(synth_root, tmp_path, tokenizer, workers) -> None:
    data = copy_as(synth_root, "synth", tmp_path, "f30k")
    _break_image(data)
    dm = _datamodule(tmp_path, tokenizer, on_error="skip", workers=workers)  # counted across worker processes
    batches = _train_batches(dm)
    assert dm.skipped_train_samples() == 5  # the image's five captions
    seen = {int(i) for b in batches for i in b["image_index"]}
    assert 10 not in seen and len(seen) >= 60


def test_eval_split_is_never_skipped(synth_root, tmp_path, tokenizer) -> None:
    data = copy_as(synth_root, "synth", tmp_path, "f30k")
    _break_image(data, "test", "test-00000003", "0.tar")
    dm = _datamodule(tmp_path, tokenizer, on_error="skip")
    dm.setup("test")
    image_loader, text_loader = dm.eval_dataloaders("test")
    assert sum(len(b["text"]) for b in text_loader) >= 48 * 5  # captions read without images: fine
    with pytest.raises(CorruptDataError, match=r"sample test-00000003 .*evaluation splits are never skipped"):
        list(image_loader)


def _garble_header(path, member_index: int = 6) -> None:
    """Overwrite one tar header in the middle of the shard (same size: only the sha256 can tell)."""
    with tarfile.open(path) as tar:
        offset = tar.getmembers()[member_index].offset
    raw = bytearray(path.read_bytes())
    raw[offset : offset + 512] = bytes((i * 37 + 11) % 251 for i in range(512))
    path.write_bytes(bytes(raw))


def _truncate(path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


@pytest.mark.parametrize(
    ("damage", "refused"), [(_garble_header, "sha256"), (_truncate, "bytes, the manifest says")]
)
def test_damaged_shard(synth_root, tmp_path, tokenizer, damage, refused) -> None:
    data = copy_as(synth_root, "synth", tmp_path, "f30k")
    shard = data / "train" / "2.tar"
    damage(shard)
    # default: refused before training, naming the shard (size check, or sha256 of a changed file)
    with pytest.raises(UserError, match=rf"shard {shard} .*{refused}.*re-create the dataset"):
        _datamodule(tmp_path, tokenizer).setup("fit")
    # skip: the manifest problem is logged, the readable part used, the rest counted, the run keeps its length
    dm = _datamodule(tmp_path, tokenizer, on_error="skip")
    batches = _train_batches(dm)
    assert 0 < dm.skipped_train_samples() <= 40  # at most the shard's 8 images x 5 captions
    assert not {int(i) for b in batches for i in b["image_index"]} & set(range(16 + 4, 24))
    # a manifest that agrees with the damaged shard (a converter wrote it so): the reader names shard and sample
    refresh_manifest(data)
    with pytest.raises(CorruptDataError, match=rf"corrupt data in shard {shard}, sample .*position \d"):
        _train_batches(_datamodule(tmp_path, tokenizer))


@pytest.mark.slow
def test_bench_error_and_skip_end_to_end(synth_root, tmp_path, capsys) -> None:
    data = copy_as(synth_root, "synth", tmp_path / "data", "f30k")
    _break_image(data)
    code = main(bench_argv(tmp_path / "data", tmp_path, "f30k"))
    err = capsys.readouterr().err
    assert_one_line_error(code, err, rf"corrupt data in shard .*1.tar, sample {BAD_KEY} .*undecodable")
    assert not results_files(tmp_path) and not (tmp_path / "boards" / "f30k.md").exists()

    assert main(bench_argv(tmp_path / "data", tmp_path, "f30k", "data.on_error=skip")) == 0
    (path,) = results_files(tmp_path)
    record = json.loads(path.read_text())
    assert record["data"] == {"on_error": "skip", "train_samples_skipped": 5}
    assert record["training"]["steps"] == 64 * 5 // 16
