"""Reader shared by the three text-based person search sets (`cuhk`, `icfg`, `rstp`).

All three ship one JSON *list* with one record per image: `split`, `captions` (a list of
strings), `id` (the identity) and the image path under `DIR/imgs/`, named `file_path` (CUHK-PEDES,
ICFG-PEDES) or `img_path` (RSTPReid). Extra fields (`processed_tokens`, ...) are ignored. This is
the layout IRRA and its successors read, so a folder that works for them works here.

Decisions shared by the three:
- image path = `DIR/imgs/<path>`; a path that already starts with `imgs/` (some re-packaged
  annotation files carry the prefix) is taken relative to `DIR` instead, never `imgs/imgs/`;
- image id = the annotation's path without that prefix (unique per image); the files carry no
  caption ids, so caption k of an image gets `{image id}#{k}` (stable: derived from the file name);
- `id` must be an integer (a string of digits is accepted: some copies quote them);
- all captions of an image are kept (most have two; CUHK-PEDES has a few with more);
- image order within a split = file order (the gallery order of the reference evaluation).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datamodules.converters.annotations import (
    RecordError,
    annotation_path,
    get_captions,
    get_int_id,
    get_str,
    load_json,
)
from datamodules.converters.engine import Annotation
from datamodules.converters.records import Entry, resolve_inside
from xmodal_bench.errors import UserError

__all__ = ["IMAGE_FOLDER", "read_pedes"]

IMAGE_FOLDER = "imgs"


def read_pedes(source: Path, filename: str, path_key: str, layout: str, obtain: str) -> Annotation:
    """Entries of `source/filename` (a list of {split, captions, <path_key>, id} records)."""
    path = annotation_path(source, filename, layout, obtain)
    document, sha256 = load_json(path)
    if not isinstance(document, list):
        raise UserError(
            f"annotation file {path} is not in the expected format: expected a JSON list of "
            f"{{split, captions, {path_key}, id}} records, got a {type(document).__name__}"
        )

    def entries() -> Iterator[Entry]:
        for i, record in enumerate(document):
            where = f"{filename} entry {i}"
            try:
                yield _entry(source, record, where, path_key)
            except RecordError as exc:
                yield Entry(where, error=str(exc))

    return Annotation(entries(), {"annotation": filename, "annotation_sha256": sha256}, total=len(document))


def _entry(source: Path, record: Any, where: str, path_key: str) -> Entry:
    if not isinstance(record, dict):
        raise RecordError(f"expected an object, got {type(record).__name__}")
    split = get_str(record, "split")
    captions = get_captions(record, "captions")
    given = get_str(record, path_key).replace("\\", "/")
    pid = get_int_id(record, "id")
    image_id = given[len(IMAGE_FOLDER) + 1 :] if given.startswith(f"{IMAGE_FOLDER}/") else given
    rel = f"{IMAGE_FOLDER}/{image_id}"
    path = resolve_inside(source, rel)
    if path is None or not image_id or given.startswith("/"):
        raise RecordError(f"field '{path_key}' {given!r} is not a path inside {IMAGE_FOLDER}/")
    return Entry(where, split=split, path=path, rel=rel, image_id=image_id, captions=captions, pid=pid)
