"""Bad input: reported with its path and counts; exit 2 and nothing written unless --skip-bad."""

from __future__ import annotations

import json
import re
import shutil

import pytest

from datamodules.converters import convert
from datamodules.converters.records import BadInputError
from datamodules.converters.samples import write_sample
from xmodal_bench.cli import main
from xmodal_bench.errors import UserError

from .helpers import read_back


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["data", "convert", *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code: int, err: str, pattern: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    return lines[0]


def _edit(path, change) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def test_every_kind_is_counted_with_its_path_and_nothing_is_written(tmp_path, capsys) -> None:
    sample = write_sample("cuhk", tmp_path / "src", sizes={"train": 6, "val": 2, "test": 2})
    images = sample.images
    (sample.root / images[0].rel).unlink()  # missing image
    (sample.root / images[1].rel).write_bytes(b"not an image at all")  # undecodable
    jpeg = next(i for i in images[2:] if i.rel.endswith(".jpg"))
    data = (sample.root / jpeg.rel).read_bytes()
    (sample.root / jpeg.rel).write_bytes(data[: len(data) // 2])  # truncated JPEG: passes PIL verify()

    def break_records(records):
        records[3]["captions"] = []  # empty caption list
        records[4]["split"] = "dev"  # unknown split
        records.append(dict(records[5]))  # duplicate image
        records[6]["captions"] = "one string"  # malformed record
        del records[7]["id"]  # malformed record

    _edit(sample.annotation, break_records)
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "cuhk", "--source", str(sample.root), "--out", str(out))
    line = _one_line_error(code, err, r"cuhk: \d+ bad input")
    # pass 1 finds everything but the decode failures, and stops before reading any image
    assert (
        "1 missing image, 1 empty caption list, 1 unknown split, 1 duplicate image, 2 malformed record"
        in line
    )
    assert "--skip-bad" in line and "nothing was written" in line
    assert str(sample.root / images[0].rel) in stdout and "split 'dev'" in stdout
    assert "reid_raw.json entry 6: field 'captions' must be a list of strings, got str" in stdout
    assert "reid_raw.json entry 7: missing field 'id'" in stdout
    assert not out.exists() or not any(out.iterdir()) or not (out / "cuhk").exists()

    code, stdout, err = _cli(capsys, "cuhk", "--source", str(sample.root), "--out", str(out), "--skip-bad")
    assert code == 0, err
    assert "bad input left out (--skip-bad): 1 missing image, 2 undecodable image" in stdout
    assert str(sample.root / images[1].rel) in stdout and str(sample.root / jpeg.rel) in stdout
    manifest, splits = read_back(out, "cuhk")
    skipped = manifest["source"]["skipped_bad_input"]
    assert skipped == {
        "missing_image": 1, "malformed_record": 2, "empty_captions": 1, "unknown_split": 1,
        "duplicate_image": 1, "undecodable_image": 2,
    }  # fmt: skip
    kept = len(images) - 7  # the duplicate was an extra record
    assert sum(len(s) for s in splits.values()) == kept
    assert manifest["splits"]["train"]["identities"] == len({s["meta"]["pid"] for s in splits["train"]})


def test_undecodable_image_without_skip_bad_leaves_no_manifest(tmp_path, capsys) -> None:
    sample = write_sample("f30k", tmp_path / "src")
    bad = sample.root / sample.images[-1].rel
    bad.write_bytes(bad.read_bytes()[:200])
    out = tmp_path / "out"
    code, stdout, err = _cli(capsys, "f30k", "--source", str(sample.root), "--out", str(out))
    _one_line_error(code, err, r"1 undecodable image .*first: undecodable image: .*flickr30k-images")
    assert "does not decode" in stdout
    assert not (out / "f30k").exists() and not list(out.glob(".f30k.partial-*"))


def test_duplicate_across_splits_is_bad_input(tmp_path) -> None:
    sample = write_sample("coco", tmp_path / "src")

    def duplicate(document):
        copy = dict(document["images"][0])
        copy["split"] = "test"
        document["images"].append(copy)

    _edit(sample.annotation, duplicate)
    with pytest.raises(BadInputError, match="1 duplicate image") as info:
        convert("coco", sample.root, tmp_path / "out", progress=False)
    assert "dataset_coco.json images[0]" in info.value.problems.lines()[1]


def test_icfg_has_no_val_split(tmp_path) -> None:
    sample = write_sample("icfg", tmp_path / "src")
    _edit(sample.annotation, lambda records: records[0].update(split="val"))
    with pytest.raises(BadInputError, match=r"1 unknown split .*split 'val' \(expected 'train', 'test'\)"):
        convert("icfg", sample.root, tmp_path / "out", progress=False)


@pytest.mark.parametrize(
    ("content", "pattern"),
    [
        (None, r"annotation file .*reid_raw.json not found \(expected: DIR/reid_raw.json .*obtain: request"),
        ("{not json", r"reid_raw.json is not valid JSON \(Expecting property name .* line 1 column 2\)"),
        ('{"images": []}', r"expected a JSON list of \{split, captions, file_path, id\} records, got a dict"),
        ("[" * 100_000, r"not valid JSON|nested too deeply"),
        (b"\xff\xfe\x00garbage", r"not valid JSON"),
    ],
)
def test_unusable_annotation_file_is_one_line(tmp_path, capsys, content, pattern) -> None:
    source = tmp_path / "src"
    (source / "imgs").mkdir(parents=True)
    if content is not None:
        path = source / "reid_raw.json"
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code, _, err = _cli(capsys, "cuhk", "--source", str(source), "--out", str(tmp_path / "out"))
    _one_line_error(code, err, pattern)


@pytest.mark.parametrize(
    ("document", "pattern"),
    [
        ([], r"expected a JSON object with an 'images' list"),
        ({"images": [42]}, r"images\[0\]: expected an object, got int"),
        ({"images": [{"split": "test", "filename": "a.jpg", "filepath": "val2014"}]}, r"'sentences' must be a list"),
        ({"images": [{"split": "test", "filename": "a.jpg", "sentences": [{"raw": "x"}]}]}, r"missing field 'filepath'"),
        ({"images": [{"split": 3, "filename": "a.jpg", "filepath": "v", "sentences": []}]}, r"'split' must be a string, got int"),
        ({"images": [{"split": "test", "filename": "../../etc/passwd", "filepath": "..", "sentences": [{"raw": "x"}]}]}, r"leaves the dataset folder"),
    ],
)  # fmt: skip
def test_malformed_karpathy_records(tmp_path, document, pattern) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "dataset_coco.json").write_text(json.dumps(document))
    with pytest.raises(UserError, match=pattern):
        convert("coco", source, tmp_path / "out", progress=False)


def test_malformed_jsonl_lines(tmp_path) -> None:
    sample = write_sample("jsonl", tmp_path / "src")
    lines = sample.annotation.read_text().splitlines()
    lines[0] = "{broken"
    lines[1] = "[1, 2]"
    lines[2] = json.dumps({"image": 5, "captions": ["x"], "split": "train"})
    lines.insert(3, "")  # blank lines are fine
    sample.annotation.write_text("\n".join(lines))
    with pytest.raises(BadInputError, match="3 malformed record") as info:
        convert("jsonl", sample.root, tmp_path / "out", progress=False)
    text = "\n".join(info.value.problems.lines())
    assert (
        "data.jsonl line 1: not a JSON object" in text and "line 2: expected a JSON object, got list" in text
    )
    assert "line 3: field 'image' must be a string, got int" in text
    report = convert("jsonl", sample.root, tmp_path / "out", skip_bad=True, progress=False)
    assert report.images == len(sample.images) - 3


def test_jsonl_person_set_needs_a_pid_on_every_line(tmp_path) -> None:
    sample = write_sample("jsonl", tmp_path / "src", person=True)
    lines = sample.annotation.read_text().splitlines()
    lines[4] = lines[4].replace('"pid": ', '"nopid": ')
    sample.annotation.write_text("\n".join(lines))
    with pytest.raises(BadInputError, match=r"1 malformed record.*no 'pid'"):
        convert("jsonl", sample.root, tmp_path / "out", progress=False)


def test_all_bad_with_skip_bad_is_still_an_error(tmp_path) -> None:
    sample = write_sample("rstp", tmp_path / "src")
    shutil.rmtree(sample.root / "imgs")
    with pytest.raises(UserError, match=r"rstp: no usable image in .*\(\d+ missing image skipped\)"):
        convert("rstp", sample.root, tmp_path / "out", skip_bad=True, progress=False)


def test_source_and_option_mistakes(tmp_path, capsys) -> None:
    sample = write_sample("cuhk", tmp_path / "cuhk")
    out = ["--out", str(tmp_path / "out")]
    cases = [
        (["cuhk", "--source", str(tmp_path / "nope"), *out], r"source folder .*nope does not exist"),
        (["cuhk", "--source", str(sample.annotation), *out], r"--source must be the dataset folder"),
        (["cuhk", "--source", str(sample.root), "--name", "x", *out], r"--name is only for jsonl"),
        (["cuhk", "--source", str(sample.root), "--shard-images", "0", *out], r"positive integer"),
        (["nosuch", "--source", str(sample.root), *out], r"invalid choice"),
        (
            ["cuhk", "--source", str(sample.root), "--out", str(tmp_path)],
            r"would replace .*which holds the source",
        ),
        (["jsonl", "--source", str(tmp_path), *out], r"exactly one \*\.jsonl file \(found: none\)"),
        (["jsonl", "--source", str(sample.annotation), "--name", "synth", *out], r"bad dataset name 'synth'"),
        (["jsonl", "--source", str(sample.annotation), "--name", "a b", *out], r"bad dataset name 'a b'"),
    ]
    for argv, pattern in cases:
        _one_line_error(*_cli(capsys, *argv)[::2], pattern)
    assert sample.annotation.is_file()
