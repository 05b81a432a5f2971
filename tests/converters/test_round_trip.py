"""Every converter on a tiny copy of its format: counts, captions, ids, splits and bytes round-trip exactly."""

from __future__ import annotations

import json

import pytest

from datamodules.converters import CONVERTERS, convert
from datamodules.converters.samples import write_sample

from .helpers import check_round_trip, read_back


@pytest.mark.parametrize("name", CONVERTERS)
def test_round_trip(tmp_path, name) -> None:
    sample = write_sample(name, tmp_path / "src")
    report = convert(name, sample.root, tmp_path / "out", shard_images=4, workers=2, progress=False)
    manifest = check_round_trip(sample, tmp_path / "out")
    assert report.out_dir == tmp_path / "out" / name and not report.problems
    assert manifest["command"].startswith(f"xmodal-bench data convert {name} --source {sample.root} --out ")
    source = manifest["source"]
    assert source["annotation"] == sample.annotation.name and len(source["annotation_sha256"]) == 64
    assert all(len(s["shards"]) == -(-s["images"] // 4) for s in manifest["splits"].values())


def test_coco_merges_restval_into_train_and_keeps_five_captions(tmp_path) -> None:
    sample = write_sample("coco", tmp_path / "src", sizes={"train": 3, "restval": 2, "val": 1, "test": 5})
    report = convert("coco", sample.root, tmp_path / "out", progress=False)
    manifest, splits = read_back(tmp_path / "out", "coco")
    assert [s["meta"]["image_id"] for s in splits["train"]] == [i.image_id for i in sample.images[:5]]
    assert {s["meta"]["source"].split("/")[0] for s in splits["train"]} == {"train2014", "val2014"}
    assert all(len(s["meta"]["captions"]) == 5 for split in splits.values() for s in split)
    extra = sum(len(i.captions) - 5 for i in sample.images)
    assert extra > 0 and report.dropped == {"captions beyond the first 5 of an image": extra}
    assert manifest["source"]["dropped"] == {"captions beyond the first 5 of an image": extra}


def test_captions_are_whitespace_normalised_and_empty_ones_dropped(tmp_path) -> None:
    sample = write_sample("cuhk", tmp_path / "src")
    records = json.loads(sample.annotation.read_text())
    records[0]["captions"] = ["  a man\nin  a red\tcoat ", "", "   ", "second one"]
    sample.annotation.write_text(json.dumps(records))
    report = convert("cuhk", sample.root, tmp_path / "out", progress=False)
    _, splits = read_back(tmp_path / "out", "cuhk")
    assert splits["train"][0]["meta"]["captions"] == ["a man in a red coat", "second one"]
    assert report.dropped == {"empty captions": 2}


def test_person_ids_train_remapped_in_first_appearance_order_eval_kept(tmp_path) -> None:
    sample = write_sample("rstp", tmp_path / "src", sizes={"train": 3, "test": 2}, images_per_id=2)
    records = json.loads(sample.annotation.read_text())
    ids = {0: 40, 1: 7, 2: 19, 3: 500, 4: 501}  # sparse, unsorted train ids; eval ids as given
    for record in records:
        record["id"] = ids[record["id"]]
    records[0], records[2] = records[2], records[0]  # first appearance: 7, 40, 19
    sample.annotation.write_text(json.dumps(records))
    convert("rstp", sample.root, tmp_path / "out", progress=False)
    manifest, splits = read_back(tmp_path / "out", "rstp")
    assert [s["meta"]["pid"] for s in splits["train"]] == [0, 1, 1, 0, 2, 2]
    assert manifest["source"]["train_pid_original"] == [7, 40, 19]
    assert [s["meta"]["pid"] for s in splits["test"]] == [500, 500, 501, 501]
    assert manifest["splits"]["train"]["identities"] == 3 and manifest["splits"]["test"]["identities"] == 2


def test_cuhk_one_based_ids_become_irra_zero_based(tmp_path) -> None:
    sample = write_sample("cuhk", tmp_path / "src")
    convert("cuhk", sample.root, tmp_path / "out", progress=False)
    _, splits = read_back(tmp_path / "out", "cuhk")
    train = [i for i in sample.images if i.split == "train"]
    assert [s["meta"]["pid"] for s in splits["train"]] == [i.pid - 1 for i in train]


def test_person_paths_with_imgs_prefix_and_quoted_ids(tmp_path) -> None:
    sample = write_sample("icfg", tmp_path / "src")
    records = json.loads(sample.annotation.read_text())
    records[0]["file_path"] = "imgs/" + records[0]["file_path"]
    records[1]["id"] = str(records[1]["id"])
    sample.annotation.write_text(json.dumps(records))
    convert("icfg", sample.root, tmp_path / "out", progress=False)
    check_round_trip(sample, tmp_path / "out")


def test_jsonl_person_set_custom_name_and_file_source(tmp_path) -> None:
    sample = write_sample("jsonl", tmp_path / "src", person=True)
    report = convert("jsonl", sample.annotation, tmp_path / "out", dataset="mine", progress=False)
    manifest = check_round_trip(sample, tmp_path / "out", dataset="mine")
    assert report.dataset == "mine" and manifest["protocol"] == "person"
    assert "--name mine" in manifest["command"]


def test_a_few_hundred_images_and_thread_count_does_not_change_the_bytes(tmp_path) -> None:
    sample = write_sample("cuhk", tmp_path / "src", sizes={"train": 90, "val": 30, "test": 30})
    assert len(sample.images) == 300
    one = convert("cuhk", sample.root, tmp_path / "a", workers=1, shard_images=64, progress=False)
    many = convert("cuhk", sample.root, tmp_path / "b", workers=4, shard_images=64, progress=False)
    check_round_trip(sample, tmp_path / "b")
    assert {k: v["identities"] for k, v in many.manifest["splits"].items()} == {
        "train": 90,
        "val": 30,
        "test": 30,
    }
    for split, info in one.manifest["splits"].items():
        assert [s["sha256"] for s in info["shards"]] == [
            s["sha256"] for s in many.manifest["splits"][split]["shards"]
        ]


def test_reconverting_replaces_the_dataset(tmp_path) -> None:
    sample = write_sample("f30k", tmp_path / "src")
    convert("f30k", sample.root, tmp_path / "out", progress=False)
    records = json.loads(sample.annotation.read_text())
    sample.annotation.write_text(json.dumps({"images": records["images"][:-2]}))
    sample.images = sample.images[:-2]
    convert("f30k", sample.root, tmp_path / "out", progress=False)
    check_round_trip(sample, tmp_path / "out")
    assert not list((tmp_path / "out").glob(".f30k.*-*"))
