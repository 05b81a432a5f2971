"""DatasetWriter -> shards + manifest -> read_manifest: round trip, determinism, crash safety, errors."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import pytest
import webdataset as wds
from PIL import Image

from datamodules.manifest import FORMAT_VERSION, read_manifest, recreate_command
from datamodules.writer import DatasetWriter
from xmodal_bench.errors import UserError


def _image(fmt: str, colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (12, 8), colour).save(buf, {"jpg": "JPEG", "png": "PNG", "webp": "WEBP"}[fmt])
    return buf.getvalue()


SAMPLES = {
    # split -> [(image_id, ext, captions, pid)]
    "train": [
        (f"t{i}", ("jpg", "png", "webp")[i % 3], [f"caption {i} a", f"caption {i} b"][: 1 + i % 2], i % 3)
        for i in range(7)
    ],
    "test": [
        (f"q{i}", "png", [f"query {i}", f"query {i} again", f"query {i} third"], 10 + i) for i in range(3)
    ],
}


def _write(root: Path, name: str = "toy", per_shard: int = 3) -> dict:
    with DatasetWriter(
        root,
        name,
        command=f"xmodal-bench data convert {name} --source SRC --out {root}",
        source_info={"note": "unit test"},
        max_images_per_shard=per_shard,
    ) as w:
        for split, rows in SAMPLES.items():
            for image_id, ext, captions, pid in rows:
                w.add(
                    split,
                    _image(ext, (pid * 20, 100, 50)),
                    ext,
                    image_id,
                    captions,
                    pid=pid,
                    source=f"src/{image_id}",
                )
    return w.manifest


def test_round_trip_keys_counts_captions_pids(tmp_path):
    manifest = _write(tmp_path)
    read = read_manifest(tmp_path, "toy", verify=True)
    assert read == manifest
    assert read["format_version"] == FORMAT_VERSION and read["protocol"] == "person"
    train = read["splits"]["train"]
    assert (train["images"], train["captions"], train["identities"]) == (
        7,
        sum(1 + i % 2 for i in range(7)),
        3,
    )
    assert [s["name"] for s in train["shards"]] == ["0.tar", "1.tar", "2.tar"]
    assert [s["images"] for s in train["shards"]] == [3, 3, 1]
    for split, rows in SAMPLES.items():
        paths = [str(p) for p in sorted((tmp_path / "toy" / split).glob("*.tar"), key=lambda p: int(p.stem))]
        samples = list(wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None))
        assert [s["__key__"] for s in samples] == [f"{split}-{i:08d}" for i in range(len(rows))]
        for sample, (image_id, ext, captions, pid) in zip(samples, rows, strict=True):
            meta = json.loads(sample["json"])
            assert meta == {
                "image_id": image_id,
                "caption_ids": [f"{image_id}#{k}" for k in range(len(captions))],
                "captions": captions,
                "pid": pid,
                "split": split,
                "source": f"src/{image_id}",
            }
            assert sample["txt"].decode() == "\n".join(captions)
            assert sample[ext] == _image(ext, (pid * 20, 100, 50))  # stored as given
            assert {k for k in sample if not k.startswith("__")} == {ext, "json", "txt"}


def test_caption_protocol_has_null_identities(tmp_path):
    with DatasetWriter(tmp_path, "capset") as w:
        w.add("test", _image("jpg", (1, 2, 3)), "jpeg", "a", ["one"])
    m = read_manifest(tmp_path, "capset")
    assert m["protocol"] == "caption" and m["splits"]["test"]["identities"] is None


def test_writer_is_deterministic(tmp_path):
    _write(tmp_path / "a")
    _write(tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.tar"))
    assert files_a and files_a == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.tar")
    )
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()


def test_writer_rejects_bad_input(tmp_path):
    with DatasetWriter(tmp_path, "bad") as w:
        with pytest.raises(ValueError, match="extension"):
            w.add("train", b"x", "gif", "a", ["c"])
        with pytest.raises(ValueError, match="captions"):
            w.add("train", b"x", "jpg", "a", [])
        w.add("train", b"x", "jpg", "a", ["c"], pid=0)
        with pytest.raises(ValueError, match="duplicate"):
            w.add("train", b"x", "jpg", "a", ["c"], pid=0)
        with pytest.raises(ValueError, match="mixes"):
            w.add("train", b"x", "jpg", "b", ["c"])
    with pytest.raises(ValueError, match="contiguous"), DatasetWriter(tmp_path, "gap") as w:
        w.add("train", b"x", "jpg", "a", ["c"], pid=0)
        w.add("train", b"x", "jpg", "b", ["c"], pid=2)
    assert not (tmp_path / "gap").exists()


def test_exception_during_write_leaves_nothing(tmp_path):
    with (
        pytest.raises(RuntimeError, match="boom"),
        DatasetWriter(tmp_path, "toy", max_images_per_shard=2) as w,
    ):
        for i in range(5):
            w.add("train", _image("png", (i, i, i)), "png", str(i), ["c"])
        raise RuntimeError("boom")
    assert not (tmp_path / "toy").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".toy.partial")] == []


def test_failed_rewrite_keeps_the_previous_dataset(tmp_path):
    before = _write(tmp_path)
    with pytest.raises(RuntimeError), DatasetWriter(tmp_path, "toy") as w:
        w.add("train", _image("png", (0, 0, 0)), "png", "new", ["c"], pid=0)
        raise RuntimeError("interrupted")
    assert read_manifest(tmp_path, "toy", verify=True) == before


def test_killed_writer_leaves_no_manifest_and_is_cleaned_up(tmp_path):
    # A writer that never closes (the process died): shards exist only in the staging folder.
    w = DatasetWriter(tmp_path, "toy", max_images_per_shard=2)
    w.open()
    for i in range(5):
        w.add("train", _image("png", (i, i, i)), "png", str(i), ["c"])
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".toy.partial")]
    assert (
        len(staging) == 1 and list(staging[0].rglob("*.tar")) and not list(staging[0].rglob("manifest.json"))
    )
    assert not (tmp_path / "toy").exists()
    with pytest.raises(UserError, match="not found"):
        read_manifest(tmp_path, "toy")
    _write(tmp_path)  # the next writer removes the leftover staging folder
    assert not staging[0].exists()
    read_manifest(tmp_path, "toy", verify=True)


@pytest.fixture
def toy(tmp_path):
    _write(tmp_path)
    return tmp_path


def test_missing_manifest_names_the_command(tmp_path):
    with pytest.raises(UserError) as err:
        read_manifest(tmp_path, "synth")
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "synth" / "manifest.json") in msg
    assert f"xmodal-bench data synth --name synth --out {tmp_path}" in msg
    with pytest.raises(UserError, match=r"xmodal-bench data convert cuhk --source DIR --out"):
        read_manifest(tmp_path, "cuhk")
    assert recreate_command("coco", "R") == "xmodal-bench data convert coco --source DIR --out R"


def test_other_format_version_is_refused(toy):
    path = toy / "toy" / "manifest.json"
    m = json.loads(path.read_text())
    m["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(m))
    with pytest.raises(UserError, match=rf"format version {FORMAT_VERSION + 1}.*re-create"):
        read_manifest(toy, "toy")


def test_corrupt_manifest_is_refused(toy):
    (toy / "toy" / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="unreadable manifest"):
        read_manifest(toy, "toy")


def test_missing_shard_is_refused(toy):
    shard = toy / "toy" / "train" / "1.tar"
    shard.unlink()
    with pytest.raises(UserError, match=f"{shard}.*missing.*xmodal-bench data convert toy --source SRC"):
        read_manifest(toy, "toy", verify=False)
    read_manifest(toy, "toy", splits=["test"])  # other splits stay readable


def test_shard_size_mismatch_is_refused_without_hashing(toy):
    shard = toy / "toy" / "test" / "0.tar"
    with open(shard, "ab") as f:
        f.write(b"\0")
    with pytest.raises(UserError, match="bytes, the manifest says"):
        read_manifest(toy, "toy", verify=False)


def test_sha256_policy(toy):
    shard = toy / "toy" / "train" / "0.tar"
    st = shard.stat()
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # same size, different content
    shard.write_bytes(bytes(data))
    read_manifest(toy, "toy", verify=False)  # sizes only
    with pytest.raises(UserError, match="sha256"):
        read_manifest(toy, "toy", verify=True)
    with pytest.raises(UserError, match="sha256"):  # auto: mtime changed -> hashed again
        read_manifest(toy, "toy")
    os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))
    read_manifest(toy, "toy")  # auto trusts an unchanged (size, mtime) it verified before
    # a copy of the dataset has no verification record: auto hashes it once
    shutil.copytree(toy / "toy", toy / "copy" / "toy")
    (toy / "copy" / "toy" / ".verified.json").unlink()
    with pytest.raises(UserError, match="sha256"):
        read_manifest(toy / "copy", "toy")


def test_auto_verification_is_recorded(toy):
    record_path = toy / "toy" / ".verified.json"
    record_path.unlink()
    read_manifest(toy, "toy")
    record = json.loads(record_path.read_text())
    assert set(record) == {f"{s}/{p.name}" for s in SAMPLES for p in (toy / "toy" / s).glob("*.tar")}


def test_unknown_split_is_refused(toy):
    with pytest.raises(UserError, match="no split 'val'"):
        read_manifest(toy, "toy", splits=["val"])
