"""`jsonl`: any image-text set described by one JSON object per line.

    {"image": "photos/0001.jpg", "captions": ["a dog on a beach", "..."], "split": "train", "pid": null}

`--source` is the `.jsonl` file itself, or a folder holding exactly one `*.jsonl` file. The
dataset is written as `--name` (default `jsonl`).

Decisions:
- `image`: a path relative to the folder of the `.jsonl` file (or absolute); it is also the
  image id, so two lines naming the same file are a duplicate image;
- `captions`: a non-empty list of strings, all kept (whitespace-normalised);
- `caption_ids` (optional): one id per caption (integers or strings, unique in the file), kept
  as the samples' caption ids; without it caption k gets `{image}#{k}`;
- `split`: `train`, `val` or `test`; anything else is bad input (a typo would otherwise create
  a split no one reads);
- `pid`: an integer identity, or null / absent. If any line has one, the set is a person set
  (person protocol) and every line needs one; train ids are then renumbered 0..N-1 by first
  appearance and val/test ids kept, as for the person datasets;
- blank lines are skipped; a line that is not a JSON object is a malformed record;
- the file is read line by line (never loaded whole), its sha256 recorded in the manifest.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datamodules.converters.annotations import RecordError, get_captions, get_int_id, get_str
from datamodules.converters.engine import Annotation, Format
from datamodules.converters.records import Entry
from xmodal_bench.errors import UserError

LAYOUT = 'a .jsonl file (or a folder with one) of {"image": path, "captions": [...], "split": ..., "pid": ...} lines'
OBTAIN = "your own data"


def _jsonl_file(source: Path) -> Path:
    if source.is_file():
        return source
    if not source.exists():
        raise UserError(f"source {source} does not exist (expected: {LAYOUT})")
    candidates = sorted(source.glob("*.jsonl"))
    if len(candidates) != 1:
        found = ", ".join(p.name for p in candidates) if candidates else "none"
        raise UserError(
            f"--source {source} must hold exactly one *.jsonl file (found: {found}); "
            "or pass the .jsonl file itself"
        )
    return candidates[0]


def read(source: Path) -> Annotation:
    path = _jsonl_file(source)
    try:
        open(path, "rb").close()  # unreadable: one clear error now, not inside the stream
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    info: dict[str, Any] = {"annotation": path.name}

    def entries() -> Iterator[Entry]:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for number, raw in enumerate(handle, 1):
                digest.update(raw)
                line = raw.strip()
                if not line:
                    continue
                where = f"{path.name} line {number}"
                try:
                    yield _entry(path.parent, line, where)
                except RecordError as exc:
                    yield Entry(where, error=str(exc))
        info["annotation_sha256"] = digest.hexdigest()

    return Annotation(entries(), info)


def _entry(base: Path, line: bytes, where: str) -> Entry:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise RecordError(f"not a JSON object ({type(exc).__name__}: {str(exc)[:80]})") from None
    if not isinstance(record, dict):
        raise RecordError(f"expected a JSON object, got {type(record).__name__}")
    image = get_str(record, "image")
    if "\x00" in image:
        raise RecordError("field 'image' contains a NUL character")
    captions = get_captions(record, "captions")
    split = get_str(record, "split")
    pid = get_int_id(record, "pid", required=False)
    caption_ids = record.get("caption_ids")
    if caption_ids is not None:
        if not isinstance(caption_ids, list) or not all(
            isinstance(i, (int, str)) and not isinstance(i, bool) and str(i) for i in caption_ids
        ):
            raise RecordError("field 'caption_ids' must be a list of integers or non-empty strings")
        caption_ids = [str(i) for i in caption_ids]
    path = Path(image).expanduser()
    path = path if path.is_absolute() else base / path
    return Entry(
        where,
        split=split,
        path=path,
        rel=image,
        image_id=image,
        captions=captions,
        pid=pid,
        caption_ids=caption_ids,
    )


FORMAT = Format(
    name="jsonl",
    title="JSON lines",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits={"train": "train", "val": "val", "test": "test"},
    person=None,
)
