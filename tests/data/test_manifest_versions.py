"""Manifest format versions: format 2 is written; a format-1 set still reads (no ids, one warning);
any other version is one line naming the command that re-creates the set (exit 2, no traceback)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
import webdataset as wds
from PIL import Image
from webdataset import TarWriter

from datamodules import FORMAT_VERSION, RetrievalDataModule, read_manifest
from datamodules.manifest import file_sha256
from datamodules.writer import DatasetWriter
from xmodal_bench.cli import main
from xmodal_bench.errors import UserError

COMMAND = "xmodal-bench data convert jsonl --source /src/toy.jsonl --name toy --out /data"


def _jpeg(value: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (value, 80, 160)).save(buf, "JPEG")
    return buf.getvalue()


def _write(root) -> dict:
    with DatasetWriter(root, "toy", command=COMMAND, max_images_per_shard=2) as writer:
        for split, n in (("train", 4), ("test", 3)):
            for i in range(n):
                writer.add(split, _jpeg(10 * i), "jpg", f"{split}/{i}.jpg", [f"cap {i}", f"other {i}"])
    return writer.manifest


def _as_format_1(root, manifest: dict) -> None:
    """Rewrite `root/toy` as the format-1 writer left it: `shard-{k:06d}.tar`, no caption ids, no
    CLIP_benchmark files."""
    base = root / "toy"
    (base / "dataset_type.txt").unlink()
    (base / ".verified.json").unlink()
    for split, info in manifest["splits"].items():
        (base / split / "nshards.txt").unlink()
        for k, shard in enumerate(info["shards"]):
            old, new = base / split / shard["name"], base / split / f"shard-{k:06d}.tar"
            samples = list(
                wds.WebDataset([str(old)], shardshuffle=False, nodesplitter=None, empty_check=False)
            )
            with open(new, "wb") as f, TarWriter(f, encoder=False) as tar:
                for s in samples:
                    meta = json.loads(s["json"])
                    del meta["caption_ids"]
                    tar.write(
                        {
                            "__key__": s["__key__"],
                            "jpg": s["jpg"],
                            "json": json.dumps(meta).encode(),
                            "txt": s["txt"],
                        }
                    )
            old.unlink()
            shard.update(name=new.name, size=new.stat().st_size, sha256=file_sha256(new))
    manifest["format_version"] = 1
    (base / "manifest.json").write_text(json.dumps(manifest))


def test_format_2_is_written(tmp_path) -> None:
    manifest = _write(tmp_path)
    assert manifest["format_version"] == FORMAT_VERSION == 2


def test_format_1_still_reads_without_ids_and_warns_once(tmp_path, tokenizer, caplog) -> None:
    _as_format_1(tmp_path, _write(tmp_path))
    with caplog.at_level(logging.WARNING, logger="xmodal_bench.data"):
        read_manifest(tmp_path, "toy")
        dm = RetrievalDataModule(tmp_path, "toy", tokenizer, batch_size=2, workers=0, val_split=None)
        dm.setup("test")
    warnings = [r.getMessage() for r in caplog.records if "manifest format 1" in r.getMessage()]
    assert len(warnings) == 1 and COMMAND in warnings[0]
    images, texts = dm.test_dataloader()
    assert sum(int(b["valid"].sum()) for b in images) == 3 and sum(int(b["valid"].sum()) for b in texts) == 6
    assert dm.split_ids("test") is None  # format 1 carries no caption ids


def test_format_2_split_ids(tmp_path, tokenizer) -> None:
    _write(tmp_path)
    dm = RetrievalDataModule(tmp_path, "toy", tokenizer, batch_size=2, workers=0, val_split=None)
    image_ids, caption_ids = dm.split_ids("test")
    assert list(image_ids) == ["test/0.jpg", "test/1.jpg", "test/2.jpg"]
    assert list(caption_ids) == [f"test/{i}.jpg#{k}" for i in range(3) for k in range(2)]


@pytest.mark.parametrize("version", [0, 3, "2", None])
def test_unknown_format_is_one_line_naming_the_command(tmp_path, capsys, version) -> None:
    _write(tmp_path)
    path = tmp_path / "toy" / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["format_version"] = version
    path.write_text(json.dumps(manifest))
    with pytest.raises(UserError, match=rf"format version {re.escape(repr(version))}.*{re.escape(COMMAND)}"):
        read_manifest(tmp_path, "toy")
    code = main(
        ["bench", "--data", "toy", "--data-root", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert err[0].startswith("xmodal-bench: error: ") and COMMAND in err[0]
