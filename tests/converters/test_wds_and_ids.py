"""`data convert wds` (CLIP_benchmark's layout, written by its own exporter) and ids through every converter."""

from __future__ import annotations

import io
import json
import re
import shutil
import tarfile

import numpy as np
import pytest

from datamodules import RetrievalDataModule
from datamodules.converters import convert
from datamodules.converters.records import BadInputError, clean_caption
from datamodules.converters.samples import write_sample
from xmodal_bench.cli import main

from .helpers import read_back


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(code: int, err: str, pattern: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


def test_clip_benchmark_export_converts_back_with_the_same_images_and_captions(tmp_path, capsys) -> None:
    exporter = pytest.importorskip("clip_benchmark.webdataset_builder")
    sample = write_sample("jsonl", tmp_path / "raw", sizes={"test": 5})
    items = [(str(sample.root / i.rel), [clean_caption(c) for c in i.captions]) for i in sample.images]
    items[1][1][0] = "a caption with\nan inner newline"  # the exporter escapes it as \n
    cb = tmp_path / "cb"
    exporter.convert_retrieval_dataset(
        items, "test", str(cb), transform=exporter.path_to_bytes, max_count=2, verbose=False
    )
    assert (cb / "test" / "nshards.txt").read_text().strip() == "3"
    code, out, err = _cli(
        capsys, "data", "convert", "wds", "--source", str(cb), "--name", "mine", "--out", str(tmp_path / "d")
    )
    assert code == 0, err
    assert "converted wds" in out and "next: xmodal-bench bench --method clip --data mine" in out
    manifest, splits = read_back(tmp_path / "d", "mine")
    got = splits["test"]
    assert [s["image"] for s in got] == [(sample.root / i.rel).read_bytes() for i in sample.images]
    expected = [[" ".join(c.split()) for c in caps] for _, caps in items]
    assert [s["meta"]["captions"] for s in got] == expected
    assert [s["meta"]["image_id"] for s in got] == [f"test/s{i:07d}" for i in range(5)]
    assert manifest["protocol"] == "caption" and "--name mine" in manifest["command"]


def test_our_own_shards_convert_back_with_ids_and_pids(synth_root, tmp_path) -> None:
    for name in ("synth", "synth_reid"):
        convert("wds", synth_root / name, tmp_path, dataset=f"{name}_again", progress=False)
        _, before = read_back(synth_root, name)
        manifest, after = read_back(tmp_path, f"{name}_again")
        assert manifest["protocol"] == ("person" if name == "synth_reid" else "caption")
        for split in before:
            assert [s["image"] for s in after[split]] == [s["image"] for s in before[split]]
            for a, b in zip(after[split], before[split], strict=True):
                for field in ("image_id", "caption_ids", "captions"):
                    assert a["meta"][field] == b["meta"][field]
                if split != "train":
                    assert a["meta"]["pid"] == b["meta"]["pid"]


def test_protocol_flag(synth_root, tmp_path, capsys) -> None:
    convert(
        "wds", synth_root / "synth_reid", tmp_path, dataset="as_captions", protocol="caption", progress=False
    )
    manifest, splits = read_back(tmp_path, "as_captions")
    assert manifest["protocol"] == "caption" and all(s["meta"]["pid"] is None for s in splits["test"])
    code, _, err = _cli(
        capsys, "data", "convert", "wds", "--source", str(synth_root / "synth"), "--name", "p",
        "--protocol", "person", "--out", str(tmp_path),
    )  # fmt: skip
    _one_line(code, err, r"bad input\(s\).*malformed record.*no 'pid'")
    assert not (tmp_path / "p").exists()
    code, _, err = _cli(capsys, "data", "convert", "coco", "--source", str(tmp_path), "--protocol", "person")
    _one_line(code, err, "--protocol is only for jsonl and wds")


@pytest.mark.parametrize(
    ("damage", "pattern"),
    [
        ("no_nshards", r"no split in .*nshards.txt"),
        ("missing_shard", r"says 3 shards but .*2.tar is missing"),
        ("classification", r"'classification': not an image-text retrieval set"),
        ("bad_count", r"must hold a positive shard count"),
        ("no_txt", r"bad input\(s\).*malformed record.*no txt member"),
    ],
)
def test_bad_wds_input_is_one_line(tmp_path, capsys, damage, pattern) -> None:
    sample = write_sample("wds", tmp_path / "src", sizes={"test": 9})
    test = sample.root / "test"
    if damage == "no_nshards":
        (test / "nshards.txt").unlink()
    elif damage == "missing_shard":
        (test / "2.tar").unlink()
    elif damage == "classification":
        (sample.root / "dataset_type.txt").write_text("classification\n")
    elif damage == "bad_count":
        (test / "nshards.txt").write_text("three\n")
    else:
        with tarfile.open(test / "0.tar") as tar:
            members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
        with tarfile.open(test / "0.tar", "w") as tar:
            for m, data in members:
                if not m.name.startswith("s0000001.txt"):
                    tar.addfile(m, io.BytesIO(data))
    code, _, err = _cli(
        capsys, "data", "convert", "wds", "--source", str(sample.root), "--out", str(tmp_path / "o")
    )
    _one_line(code, err, pattern)
    assert not (tmp_path / "o" / "wds").exists()


def test_coco_keeps_cocoid_and_sentids_through_split_ids(tmp_path, tokenizer) -> None:
    sample = write_sample("coco", tmp_path / "src")
    convert("coco", sample.root, tmp_path / "out", shard_images=3, progress=False)
    records = json.loads(sample.annotation.read_text())["images"]
    test = [r for r in records if r["split"] == "test"]
    dm = RetrievalDataModule(tmp_path / "out", "coco", tokenizer, batch_size=4, workers=0)
    image_ids, caption_ids = dm.split_ids("test")
    assert image_ids.dtype == np.int64 and caption_ids.dtype == np.int64
    assert image_ids.tolist() == [r["cocoid"] for r in test]
    assert caption_ids.tolist() == [s["sentid"] for r in test for s in r["sentences"][:5]]
    # the evaluation loops' order: caption index j belongs to image index owner[j]
    _, texts = dm.test_dataloader()
    owner = np.concatenate([b["image_index"][b["valid"]].numpy() for b in texts])
    assert owner.tolist() == [i for i, r in enumerate(test) for _ in r["sentences"][:5]]


def test_f30k_sentids_cuhk_derived_jsonl_given(tmp_path) -> None:
    f30k = write_sample("f30k", tmp_path / "f30k")
    convert("f30k", f30k.root, tmp_path / "out", progress=False)
    records = json.loads(f30k.annotation.read_text())["images"]
    _, splits = read_back(tmp_path / "out", "f30k")
    got = [s["meta"] for split in ("train", "val", "test") for s in splits[split]]
    by_id = {r["filename"].split(".")[0]: r for r in records}
    for meta in got:
        assert meta["caption_ids"] == [str(i) for i in by_id[meta["image_id"]]["sentids"][:5]]

    cuhk = write_sample("cuhk", tmp_path / "cuhk")
    convert("cuhk", cuhk.root, tmp_path / "out", progress=False)
    _, splits = read_back(tmp_path / "out", "cuhk")
    meta = splits["test"][0]["meta"]
    assert meta["caption_ids"] == [f"{meta['image_id']}#{k}" for k in range(len(meta["captions"]))]

    lines = [
        {"image": "a.png", "captions": ["one", "  ", "two"], "split": "test", "caption_ids": [7, 8, 9]},
        {"image": "b.png", "captions": ["three"], "split": "test", "caption_ids": ["x"]},
    ]
    src = tmp_path / "j"
    src.mkdir()
    shutil.copy(cuhk.root / cuhk.images[0].rel, src / "a.png")
    shutil.copy(cuhk.root / cuhk.images[0].rel, src / "b.png")
    (src / "d.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    convert("jsonl", src, tmp_path / "out", dataset="j", progress=False)
    _, splits = read_back(tmp_path / "out", "j")
    assert [s["meta"]["caption_ids"] for s in splits["test"]] == [
        ["7", "9"],
        ["x"],
    ]  # the empty one's id left out


def test_duplicate_caption_ids_are_bad_input(tmp_path) -> None:
    sample = write_sample("coco", tmp_path / "src", sizes={"train": 2, "test": 2})
    document = json.loads(sample.annotation.read_text())
    document["images"][3]["sentences"][0]["sentid"] = document["images"][0]["sentences"][0]["sentid"]
    sample.annotation.write_text(json.dumps(document))
    with pytest.raises(BadInputError, match="1 duplicate caption id"):
        convert("coco", sample.root, tmp_path / "out", progress=False)
