"""Reader shared by the two Karpathy-split caption sets (`coco`, `f30k`).

Karpathy's `dataset_{coco,flickr30k}.json` (from the "Deep Visual-Semantic Alignments" release)
is one JSON object: `{"dataset": ..., "images": [...]}`, one record per image with
`split` (`train` / `restval` / `val` / `test`), `filename`, `sentences` (a list of
`{"raw": str, "tokens": [...], ...}`), plus `filepath` (`train2014` / `val2014`) and `cocoid`
for COCO. We read only those fields, in file order: that order is the protocol's image order
(COCO's five 1K test folds are consecutive runs of 1,000 images in it).

Captions are the `raw` strings (not the lowercased `tokens`), whitespace-normalised; the first
five non-empty ones of every image are kept, in every split (the 5-captions-per-image protocol;
a few COCO images have six or seven, and the report counts what was dropped).

Caption ids: each sentence's `sentid`, else the record's `sentids` list (same order; both are
in Karpathy's files, and for COCO they are the COCO caption annotation ids ECCV Caption and CxC
use); a record with neither gets `{image_id}#{k}` from the writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datamodules.converters.annotations import RecordError, annotation_path, get_str, load_json
from datamodules.converters.engine import Annotation
from datamodules.converters.records import Entry, resolve_inside
from xmodal_bench.errors import UserError

__all__ = ["KARPATHY_CAPTIONS", "read_karpathy"]

KARPATHY_CAPTIONS = 5

# record -> (image path relative to DIR, image id)
Locate = Callable[[Mapping[str, Any], str], tuple[str, str]]


def read_karpathy(source: Path, filename: str, locate: Locate, layout: str, obtain: str) -> Annotation:
    """Entries of `source/filename`; `locate(record, filename)` says where the image is and its id."""
    path = annotation_path(source, filename, layout, obtain)
    document, sha256 = load_json(path)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        raise UserError(
            f"annotation file {path} is not in Karpathy's format: expected a JSON object with an "
            "'images' list of {split, filename, sentences: [{raw}]} records"
        )
    images = document["images"]

    def entries() -> Iterator[Entry]:
        for i, record in enumerate(images):
            where = f"{filename} images[{i}]"
            try:
                yield _entry(source, record, where, locate)
            except RecordError as exc:
                yield Entry(where, error=str(exc))

    return Annotation(entries(), {"annotation": filename, "annotation_sha256": sha256}, total=len(images))


def _entry(source: Path, record: Any, where: str, locate: Locate) -> Entry:
    if not isinstance(record, dict):
        raise RecordError(f"expected an object, got {type(record).__name__}")
    split = get_str(record, "split")
    name = get_str(record, "filename")
    sentences = record.get("sentences")
    if not isinstance(sentences, list):
        raise RecordError("field 'sentences' must be a list of {raw: str} objects")
    captions = []
    for k, sentence in enumerate(sentences):
        raw = sentence.get("raw") if isinstance(sentence, dict) else None
        if not isinstance(raw, str):
            raise RecordError(f"sentences[{k}] must be an object with a string 'raw'")
        captions.append(raw)
    rel, image_id = locate(record, name)
    path = resolve_inside(source, rel)
    if path is None:
        raise RecordError(f"image path {rel!r} leaves the dataset folder")
    return Entry(
        where,
        split=split,
        path=path,
        rel=rel,
        image_id=image_id,
        captions=captions,
        caption_ids=_caption_ids(record, sentences),
    )


def _caption_ids(record: Mapping[str, Any], sentences: list[dict[str, Any]]) -> list[str] | None:
    """The sentences' `sentid`s, else the record's `sentids`; None when the record has neither."""
    ids = [s.get("sentid") for s in sentences]
    if any(i is None for i in ids):
        ids = record.get("sentids")
        if ids is None:
            return None
        if not isinstance(ids, list) or len(ids) != len(sentences):
            raise RecordError("field 'sentids' must list one id per sentence")
    for i in ids:
        if isinstance(i, bool) or not isinstance(i, (int, str)) or str(i) == "":
            raise RecordError(f"caption id {i!r} must be an integer or a non-empty string")
    return [str(i) for i in ids]
