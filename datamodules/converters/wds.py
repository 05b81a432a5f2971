"""`wds`: a set in CLIP_benchmark's WebDataset retrieval layout (`wds_flickr30k`, `wds_mscoco_captions`, ...).

Layout: per split `DIR/{split}/nshards.txt` (the shard count N) and `DIR/{split}/0.tar ...
{N-1}.tar`, optionally `DIR/dataset_type.txt` (`retrieval`). A sample is one image
(`webp`, `png`, `jpg` or `jpeg` member) with its captions joined by newlines (`txt`), as
CLIP_benchmark's exporter (`clip_benchmark_export_wds --retrieval`) writes them. A set written
by xmodal-bench has this layout too, so it converts back as well.

Decisions:
- splits: every folder of DIR with an `nshards.txt`; `train`, `val` (or `validation`) and
  `test` are written, any other is bad input ("unknown split"); a shard that is missing, or an
  `nshards.txt` that is not a positive integer, is refused up front (one line);
- streaming: pass 1 reads only tar headers and the small members (`txt`, `json`, `cls`); the
  image bytes are read in pass 2 straight from their offset in the tar, as given (no re-encode);
  if a sample has several image members, the first of webp, png, jpg, jpeg (CLIP_benchmark's
  order) is taken;
- captions: `txt` split into lines (CLIP_benchmark's `str.splitlines`), whitespace-normalised,
  all kept; its exporter escapes a newline inside a caption as the two characters `\\n`, which
  become a space again;
- ids: a `json` member written by xmodal-bench gives `image_id`, `caption_ids` and `pid`; else
  image id = `{split}/{key}` (CLIP_benchmark's keys restart in every split) and caption k gets
  `{image id}#{k}`;
- protocol: `--protocol person` needs a pid on every image (`json` `pid`, or an integer `cls`
  member); `caption` drops them; by default a set is a person set when its samples carry pids;
- a `dataset_type.txt` saying anything but `retrieval` (a classification set) is refused.
"""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datamodules.converters.engine import Annotation, Format
from datamodules.converters.records import Entry
from xmodal_bench.errors import UserError

LAYOUT = (
    "DIR/{split}/nshards.txt and DIR/{split}/0.tar ... {N-1}.tar (CLIP_benchmark's wds/ retrieval layout)"
)
OBTAIN = "a CLIP_benchmark WebDataset export (clip_benchmark_export_wds --retrieval), or your own"
SPLITS = {"train": "train", "val": "val", "validation": "val", "test": "test"}
IMAGE_ORDER = ("webp", "png", "jpg", "jpeg")  # CLIP_benchmark's to_tuple order
_SMALL = ("txt", "json", "cls")
_MEMBER = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")  # webdataset's key / extension split
_ORDER = {"train": 0, "val": 1, "validation": 1, "test": 2}


def _splits(source: Path) -> list[tuple[str, list[Path]]]:
    """(split folder name, its shard paths) for every folder with an nshards.txt, train/val/test first."""
    if not source.exists():
        raise UserError(f"source folder {source} does not exist (expected: {LAYOUT})")
    if not source.is_dir():
        raise UserError(f"--source must be the dataset folder, got the file {source} (expected: {LAYOUT})")
    kind = source / "dataset_type.txt"
    if kind.is_file():
        value = kind.read_text(encoding="utf-8", errors="replace").strip().lower()
        if value != "retrieval":
            raise UserError(f"{kind} says {value!r}: not an image-text retrieval set (expected 'retrieval')")
    found = sorted(
        (p.parent for p in source.glob("*/nshards.txt")), key=lambda p: (_ORDER.get(p.name, 3), p.name)
    )
    if not found:
        raise UserError(f"no split in {source}: expected {LAYOUT}")
    out = []
    for folder in found:
        text = (folder / "nshards.txt").read_text(encoding="utf-8", errors="replace").strip()
        if not text.isdecimal() or int(text) < 1:
            raise UserError(f"{folder / 'nshards.txt'} must hold a positive shard count, got {text[:40]!r}")
        shards = [folder / f"{k}.tar" for k in range(int(text))]
        missing = [p for p in shards if not p.is_file()]
        if missing:
            raise UserError(
                f"{folder / 'nshards.txt'} says {text} shards but {missing[0]} is missing "
                f"({len(missing)} missing; expected: {LAYOUT})"
            )
        out.append((folder.name, shards))
    return out


def read(source: Path) -> Annotation:
    splits = _splits(source)
    digest = hashlib.sha256()
    info: dict[str, Any] = {"annotation": "nshards.txt", "shards": {s: len(p) for s, p in splits}}

    def entries() -> Iterator[Entry]:
        # annotation_sha256: of the samples' keys and captions, in order (the tars' image bytes
        # are not read twice to hash them; the shards' own sha256s are in the new manifest)
        for split, shards in splits:
            for k, shard in enumerate(shards):
                yield from _shard_entries(split, k, shard, digest)
        info["annotation_sha256"] = digest.hexdigest()

    return Annotation(entries(), info)


def _shard_entries(split: str, k: int, shard: Path, digest: Any) -> Iterator[Entry]:
    """One entry per sample of one tar, reading headers and the small members only."""
    where = f"{split}/{k}.tar"
    try:
        tar = tarfile.open(shard, "r:")  # noqa: SIM115 - closed below; offsets need an uncompressed tar
    except (tarfile.TarError, OSError) as exc:
        yield Entry(where, error=f"unreadable tar ({type(exc).__name__}: {exc})")
        return
    with tar:
        key, members = None, {}
        try:
            for m in tar:
                match = _MEMBER.match(m.name)
                if not m.isfile() or match is None:
                    continue
                if match.group(1) != key:
                    if key is not None:
                        yield _entry(split, k, shard, key, members, digest)
                    key, members = match.group(1), {}
                ext = match.group(2).lower()
                if ext in _SMALL:
                    members[ext] = tar.extractfile(m).read()  # type: ignore[union-attr]
                elif ext in IMAGE_ORDER:
                    members[ext] = (m.offset_data, m.size)
        except (tarfile.TarError, OSError, EOFError) as exc:
            yield Entry(f"{where} after sample {key}", error=f"unreadable tar ({type(exc).__name__}: {exc})")
            return
        if key is not None:
            yield _entry(split, k, shard, key, members, digest)


def _entry(split: str, k: int, shard: Path, key: str, members: dict[str, Any], digest: Any) -> Entry:
    where = f"{split}/{k}.tar sample {key}"
    ext = next((e for e in IMAGE_ORDER if e in members), None)
    if ext is None:
        return Entry(where, error=f"no image member ({', '.join(IMAGE_ORDER)})")
    if "txt" not in members:
        return Entry(where, error="no txt member (the captions, one per line)")
    digest.update(f"{split}/{k}/{key}\0".encode())
    digest.update(members["txt"])
    try:
        text = members["txt"].decode("utf-8")
    except UnicodeDecodeError:
        return Entry(where, error="txt member is not UTF-8 text")
    captions = [line.replace("\\n", " ") for line in text.splitlines()]
    meta = _json(members.get("json"))
    image_id = str(meta.get("image_id") or f"{split}/{key}")
    caption_ids = meta.get("caption_ids")
    if not (isinstance(caption_ids, list) and len(caption_ids) == len(captions)):
        caption_ids = None
    pid = meta.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool):
        pid = _cls(members.get("cls"))
    return Entry(
        where,
        split=split,
        path=shard,
        rel=f"{split}/{k}.tar:{key}.{ext}",
        image_id=image_id,
        captions=captions,
        pid=pid,
        caption_ids=None if caption_ids is None else [str(i) for i in caption_ids],
        member=members[ext],
    )


def _json(data: bytes | None) -> dict[str, Any]:
    if data is None:
        return {}
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _cls(data: bytes | None) -> int | None:
    if data is None:
        return None
    text = data.decode("utf-8", errors="replace").strip()
    return int(text) if text.lstrip("-").isdecimal() else None


FORMAT = Format(
    name="wds",
    title="CLIP_benchmark WebDataset",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits=SPLITS,
    person=None,
)
