"""Small stand-ins for the distributed datasets, in their real layouts, with real image files.

`write_sample(name, root, ...)` writes a fake copy of dataset `name` as its authors ship it (the
annotation file with its real name and fields, images at their real relative paths, in the
formats the real sets use: JPEG everywhere, PNG in CUHK-PEDES' `CUHK01/`, BMP in its VIPeR
folders `cam_a/`), and returns what a converter must reproduce. Used by the converter tests, the
throughput benchmark (`benchmarks/perf/convert_throughput.py`), and to try the converters
without the real data. The captions exercise the clean-up rules: stray whitespace and newlines,
Karpathy images with six or seven captions.
"""

from __future__ import annotations

import io
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = ["SAMPLE_NAMES", "Sample", "SampleImage", "write_sample"]

SAMPLE_NAMES = ("coco", "f30k", "cuhk", "icfg", "rstp", "jsonl", "wds")

# default sizes: caption sets in images per split; person sets in identities per split
DEFAULT_SIZES: dict[str, dict[str, int]] = {
    "coco": {"train": 8, "restval": 4, "val": 6, "test": 10},
    "f30k": {"train": 12, "val": 6, "test": 8},
    "cuhk": {"train": 6, "val": 3, "test": 3},
    "icfg": {"train": 6, "test": 4},
    "rstp": {"train": 5, "val": 2, "test": 2},
    "jsonl": {"train": 10, "val": 4, "test": 6},
    "wds": {"train": 9, "test": 7},
}
WDS_SHARD_IMAGES = 4  # images per tar in the wds sample (CLIP_benchmark's exporter: maxcount)
_WORDS = (
    "red",
    "blue",
    "green",
    "black",
    "white",
    "small",
    "large",
    "person",
    "dog",
    "walking",
    "shirt",
    "the",
    "a",
)


@dataclass
class SampleImage:
    """One image of a sample dataset as its annotation file lists it."""

    split: str  # the split value written in the annotation (`restval` for some COCO images)
    rel: str  # path relative to the dataset folder
    image_id: str  # the id a converter should give it
    captions: list[str]  # as written in the annotation (before clean-up)
    pid: int | None = None  # the dataset's own identity id
    data: bytes | None = None  # the image bytes, when they live inside a tar (wds), not at `rel`


@dataclass
class Sample:
    root: Path
    name: str
    annotation: Path
    images: list[SampleImage] = field(default_factory=list)  # in annotation order


def write_sample(
    name: str,
    root: str | Path,
    sizes: Mapping[str, int] | None = None,
    image_size: tuple[int, int] | None = None,
    images_per_id: int | None = None,
    seed: int = 0,
    person: bool = False,
    distinct_images: int | None = None,
) -> Sample:
    """Write a fake `name` dataset into folder `root` (created); see the module docstring.

    `sizes`: per split, images (caption sets) or identities (person sets). `image_size`: (height,
    width) of the images (default 48x48 for caption sets, 48x16 for person sets).
    `images_per_id`: person sets (default 2, rstp 5). `person`: jsonl only: give every line a pid.
    `distinct_images`: draw only this many different pictures and repeat their bytes under new
    file names (large samples for throughput runs are then quick to write).
    """
    if name not in SAMPLE_NAMES:
        raise ValueError(f"unknown sample {name!r}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    sizes = dict(sizes or DEFAULT_SIZES[name])
    writer = {
        "coco": _coco,
        "f30k": _f30k,
        "cuhk": _cuhk,
        "icfg": _icfg,
        "rstp": _rstp,
        "jsonl": _jsonl,
        "wds": _wds,
    }[name]
    is_person = name in ("cuhk", "icfg", "rstp") or person
    size = image_size or ((48, 16) if is_person else (48, 48))
    per_id = images_per_id or (5 if name == "rstp" else 2)
    pictures = _Pictures(root, size, rng, distinct_images)
    sample = writer(pictures, sizes, per_id, rng, person)
    sample.name = name
    return sample


# -- images and captions ------------------------------------------------------------------------------


def _image_bytes(index: int, size: tuple[int, int], fmt: str, rng: random.Random) -> bytes:
    """A small picture that differs per index: a gradient, a coloured box, mild noise."""
    h, w = size
    base = np.linspace(40, 210, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
    tint = np.array([(index * 37) % 255, (index * 91) % 255, (index * 53) % 255], np.float32)
    pixels = 0.6 * base + 0.4 * tint + np.random.default_rng(index).normal(0, 6, (h, w, 3))
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    box = (rng.randrange(w // 2), rng.randrange(h // 2))
    ImageDraw.Draw(image).rectangle(
        (*box, box[0] + w // 3, box[1] + h // 3), fill=tuple(int(v) for v in tint[::-1])
    )
    buf = io.BytesIO()
    if fmt == "jpg":
        image.save(buf, "JPEG", quality=90)
    elif fmt == "webp":
        image.save(buf, "WEBP", lossless=True)  # as CLIP_benchmark's exporter (PIL_to_bytes("webp"))
    elif fmt == "png":
        image.save(buf, "PNG")
    else:
        image.save(buf, "BMP")
    return buf.getvalue()


class _Pictures:
    """Writes picture number `index` at `root/rel` (format from the extension); caches if `distinct`."""

    def __init__(self, root: Path, size: tuple[int, int], rng: random.Random, distinct: int | None) -> None:
        self.root, self.size, self.rng, self.distinct = root, size, rng, distinct
        self.cache: dict[tuple[int, str], bytes] = {}

    def put(self, rel: str, index: int) -> None:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".png": "png", ".bmp": "bmp"}.get(path.suffix, "jpg")
        if self.distinct is None:
            path.write_bytes(_image_bytes(index, self.size, fmt, self.rng))
            return
        key = (index % self.distinct, fmt)
        if key not in self.cache:
            self.cache[key] = _image_bytes(key[0], self.size, fmt, self.rng)
        path.write_bytes(self.cache[key])


def _caption(rng: random.Random, messy: bool = False) -> str:
    text = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 9)))
    if messy:  # what real annotation files contain: trailing space, a newline, a double space
        text = rng.choice([f"{text} ", f"{text}\n", text.replace(" ", "  ", 1), f" {text}"])
    return text


def _captions(rng: random.Random, n: int) -> list[str]:
    return [_caption(rng, messy=rng.random() < 0.2) for _ in range(n)]


# -- formats ------------------------------------------------------------------------------------------


def _karpathy(root: Path, file: str, images: list[SampleImage], records: list[dict]) -> Sample:
    (root / file).write_text(json.dumps({"images": records, "dataset": file.split("_")[1].split(".")[0]}))
    return Sample(root, "", root / file, images)


def _coco(pics, sizes, per_id, rng, person) -> Sample:
    images, records, index = [], [], 0
    for split, n in sizes.items():
        folder = "train2014" if split == "train" else "val2014"
        for _ in range(n):
            cocoid = 100_000 + index * 7
            filename = f"COCO_{folder}_{cocoid:012d}.jpg"
            captions = _captions(rng, 5 + (index % 4 == 1) + (index % 8 == 1))  # some have 6 or 7
            pics.put(f"{folder}/{filename}", index)
            records.append(
                {
                    "filepath": folder,
                    "sentids": list(range(index * 10, index * 10 + len(captions))),
                    "filename": filename,
                    "imgid": index,
                    "split": split,
                    "sentences": [
                        {"tokens": c.lower().split(), "raw": c, "imgid": index, "sentid": index * 10 + k}
                        for k, c in enumerate(captions)
                    ],
                    "cocoid": cocoid,
                }
            )
            images.append(SampleImage(split, f"{folder}/{filename}", str(cocoid), captions))
            index += 1
    return _karpathy(pics.root, "dataset_coco.json", images, records)


def _f30k(pics, sizes, per_id, rng, person) -> Sample:
    images, records, index = [], [], 0
    for split, n in sizes.items():
        for _ in range(n):
            stem = str(1_000_092_795 + index * 13)
            captions = _captions(rng, 5 + (index % 5 == 2))
            pics.put(f"flickr30k-images/{stem}.jpg", index)
            records.append(
                {
                    "sentids": list(range(index * 5, index * 5 + len(captions))),
                    "imgid": index,
                    "sentences": [{"tokens": c.split(), "raw": c, "imgid": index} for c in captions],
                    "split": split,
                    "filename": f"{stem}.jpg",
                }
            )
            images.append(SampleImage(split, f"flickr30k-images/{stem}.jpg", stem, captions))
            index += 1
    return _karpathy(pics.root, "dataset_flickr30k.json", images, records)


def _pedes(pics, file, path_key, rel_of, sizes, per_id, first_id, captions_of) -> Sample:
    images, records, index, pid = [], [], 0, first_id
    for split, n_ids in sizes.items():
        for _ in range(n_ids):
            for k in range(per_id):
                given = rel_of(split, pid, k, index)
                captions = captions_of(index)
                pics.put(f"imgs/{given}", index)
                records.append(
                    {"split": split, "captions": captions, path_key: given, "id": pid, "processed_tokens": []}
                )
                images.append(SampleImage(split, f"imgs/{given}", given, captions, pid))
                index += 1
            pid += 1
    if path_key == "img_path":  # RSTPReid puts `id` first
        records = [
            {"id": r["id"], "img_path": r["img_path"], "captions": r["captions"], "split": r["split"]}
            for r in records
        ]
    (pics.root / file).write_text(json.dumps(records))
    return Sample(pics.root, "", pics.root / file, images)


def _cuhk(pics, sizes, per_id, rng, person) -> Sample:
    folders = [
        ("CUHK01", "png"),
        ("CUHK03", "jpg"),
        ("Market", "jpg"),
        ("cam_a", "bmp"),
        ("train_query", "jpg"),
    ]

    def rel_of(split, pid, k, index):
        folder, ext = folders[index % len(folders)]
        return f"{folder}/{pid:04d}{k:03d}.{ext}"

    return _pedes(
        pics, "reid_raw.json", "file_path", rel_of, sizes, per_id, 1,
        lambda i: _captions(rng, 3 if i % 7 == 3 else 2),
    )  # fmt: skip


def _icfg(pics, sizes, per_id, rng, person) -> Sample:
    def rel_of(split, pid, k, index):
        return f"{split}/{pid:04d}/{pid:04d}_{k:03d}_05_0303morning_{index:04d}_0.jpg"

    return _pedes(pics, "ICFG-PEDES.json", "file_path", rel_of, sizes, per_id, 0, lambda i: _captions(rng, 1))


def _rstp(pics, sizes, per_id, rng, person) -> Sample:
    def rel_of(split, pid, k, index):
        return f"{pid:04d}_c{1 + index % 14}_{k:04d}.jpg"

    return _pedes(
        pics, "data_captions.json", "img_path", rel_of, sizes, per_id, 0, lambda i: _captions(rng, 2)
    )


def _jsonl(pics, sizes, per_id, rng, person) -> Sample:
    images, lines, index = [], [], 0
    for split, n in sizes.items():
        for j in range(n):
            rel = f"images/{split}/{index:05d}.{'png' if index % 3 == 0 else 'jpg'}"
            captions = _captions(rng, 1 + index % 3)
            pid = (1000 if split != "train" else 50) + j // 2 if person else None
            pics.put(rel, index)
            lines.append(json.dumps({"image": rel, "captions": captions, "split": split, "pid": pid}))
            images.append(SampleImage(split, rel, rel, captions, pid))
            index += 1
    (pics.root / "data.jsonl").write_text("\n".join(lines) + "\n")
    return Sample(pics.root, "", pics.root / "data.jsonl", images)


def _wds(pics, sizes, per_id, rng, person) -> Sample:
    """CLIP_benchmark's retrieval export, written as its `convert_retrieval_dataset` does: per split a
    `webdataset.ShardWriter` on `{split}/%d.tar`, keys `s%07d` restarting in every split, the image
    under its format's extension (webp, the exporter's default; some jpg), `txt` = the captions
    joined by newlines with any newline inside a caption escaped as `\\n`, then `nshards.txt`
    and `dataset_type.txt`."""
    from webdataset import ShardWriter

    root = pics.root
    (root / "dataset_type.txt").write_text("retrieval\n")
    images, index = [], 0
    for split, n in sizes.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        sink = ShardWriter(str(root / split / "%d.tar"), maxcount=WDS_SHARD_IMAGES, verbose=0)
        for i in range(n):
            ext = "jpg" if index % 3 == 0 else "webp"
            data = _image_bytes(index, pics.size, ext, pics.rng)
            captions = _captions(rng, 1 + index % 5)
            key = f"s{i:07d}"
            sink.write(
                {"__key__": key, ext: data, "txt": "\n".join(c.replace("\n", r"\n") for c in captions)}
            )
            shard = i // WDS_SHARD_IMAGES
            rel = f"{split}/{shard}.tar:{key}.{ext}"
            images.append(SampleImage(split, rel, f"{split}/{key}", captions, None, data))
            index += 1
        shards = sink.shard
        sink.close()
        (root / split / "nshards.txt").write_text(f"{shards}\n")
    return Sample(root, "", root / split / "nshards.txt", images)
