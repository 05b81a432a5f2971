"""Read a converted dataset back (straight from the tars) and say what it should contain."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any

from PIL import Image

from datamodules.converters import get_format
from datamodules.converters.records import clean_caption
from datamodules.converters.samples import Sample, SampleImage
from datamodules.manifest import read_manifest


def read_back(root: Path, dataset: str) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """(manifest, split -> samples in order); each sample: key, ext, image (bytes), meta, txt."""
    manifest = read_manifest(root, dataset, verify=True)
    splits: dict[str, list[dict[str, Any]]] = {}
    for split, info in manifest["splits"].items():
        samples: dict[str, dict[str, Any]] = {}
        for shard in info["shards"]:
            with tarfile.open(root / dataset / split / shard["name"]) as tar:
                for member in tar.getmembers():
                    key, _, ext = member.name.partition(".")
                    data = tar.extractfile(member).read()
                    sample = samples.setdefault(key, {"key": key})
                    if ext == "json":
                        sample["meta"] = json.loads(data)
                    elif ext == "txt":
                        sample["txt"] = data.decode()
                    else:
                        sample["ext"], sample["image"] = ext, data
        splits[split] = list(samples.values())
    return manifest, splits


def expected_captions(name: str, image: SampleImage) -> list[str]:
    kept = [c for c in (clean_caption(c) for c in image.captions) if c]
    limit = get_format(name).max_captions
    return kept[:limit] if limit else kept


def expected_split(name: str, image: SampleImage) -> str:
    return get_format(name).splits[image.split]


def pixels(data: bytes) -> bytes:
    with Image.open(io.BytesIO(data)) as im:
        return im.convert("RGB").tobytes()


def check_round_trip(sample: Sample, out: Path, dataset: str | None = None) -> dict[str, Any]:
    """Assert that `{out}/{dataset}` holds exactly the sample: order, keys, bytes, captions, ids, counts."""
    name = sample.name
    dataset = dataset or name
    manifest, splits = read_back(out, dataset)
    by_split: dict[str, list[SampleImage]] = {}
    for image in sample.images:
        by_split.setdefault(expected_split(name, image), []).append(image)
    assert list(splits) == [s for s in ("train", "val", "test") if s in by_split]
    person = any(image.pid is not None for image in sample.images)
    assert manifest["protocol"] == ("person" if person else "caption")
    train_map: dict[int, int] = {}
    for split, images in by_split.items():
        got = splits[split]
        assert [s["key"] for s in got] == [f"{split}-{i:08d}" for i in range(len(images))]
        for image, s in zip(images, got, strict=True):
            meta = s["meta"]
            captions = expected_captions(name, image)
            assert meta["captions"] == captions and s["txt"] == "\n".join(captions)
            assert meta["image_id"] == image.image_id and meta["split"] == split
            assert meta["source"] == image.rel
            source_bytes = image.data if image.data is not None else (sample.root / image.rel).read_bytes()
            if image.rel.endswith(".bmp"):  # re-encoded losslessly
                assert s["ext"] == "png" and pixels(s["image"]) == pixels(source_bytes)
            else:
                assert s["image"] == source_bytes  # stored as given
                assert s["ext"] == Path(image.rel).suffix.lstrip(".").replace("jpeg", "jpg")
            if not person:
                assert meta["pid"] is None
            elif split == "train":
                assert train_map.setdefault(image.pid, meta["pid"]) == meta["pid"]
            else:
                assert meta["pid"] == image.pid  # eval ids are kept
        info = manifest["splits"][split]
        assert info["images"] == len(images)
        assert info["captions"] == sum(len(expected_captions(name, i)) for i in images)
        assert info["identities"] == (len({i.pid for i in images}) if person else None)
    if person:
        assert sorted(train_map.values()) == list(range(len(train_map)))  # contiguous 0..N-1
        original = manifest["source"]["train_pid_original"]
        assert {pid: original[new] for pid, new in train_map.items()} == {p: p for p in train_map}
    return manifest
