"""`coco`: MS-COCO with Karpathy's splits, from `dataset_coco.json` + the 2014 image folders.

Layout: `DIR/dataset_coco.json`, images at `DIR/<filepath>/<filename>`, i.e.
`DIR/train2014/COCO_train2014_*.jpg` and `DIR/val2014/COCO_val2014_*.jpg` (Karpathy's val and
test images, and `restval`, all come from val2014: both folders are needed).

Decisions:
- splits: `train` + `restval` -> train (113,287 images), `val` -> val (5,000), `test` -> test
  (5,000); anything else is bad input ("unknown split");
- five captions per image in every split (`raw`, whitespace-normalised; the extras a few images
  carry are dropped and counted), see `karpathy`;
- image id = the record's `cocoid` (COCO's own id, so results can be joined with COCO tools),
  or the file name's stem when `cocoid` is absent; `filepath` is required;
- caption ids = Karpathy's `sentids` (COCO caption annotation ids: what ECCV Caption and CxC
  key on), kept for the five captions written;
- image order within a split = file order, which defines the 1K test folds.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamodules.converters.annotations import RecordError, get_str
from datamodules.converters.engine import Annotation, Format
from datamodules.converters.karpathy import KARPATHY_CAPTIONS, read_karpathy

ANNOTATION = "dataset_coco.json"
LAYOUT = f"DIR/{ANNOTATION} with images at DIR/train2014/*.jpg and DIR/val2014/*.jpg"
OBTAIN = (
    "images: https://cocodataset.org/#download (2014 Train and 2014 Val images); splits: "
    "dataset_coco.json from Karpathy's caption_datasets.zip (cs.stanford.edu/people/karpathy/deepimagesent)"
)


def _locate(record: Mapping[str, Any], filename: str) -> tuple[str, str]:
    folder = get_str(record, "filepath").strip("/")
    cocoid = record.get("cocoid")
    if cocoid is not None and (isinstance(cocoid, bool) or not isinstance(cocoid, int)):
        raise RecordError(f"field 'cocoid' must be an integer, got {type(cocoid).__name__}")
    image_id = str(cocoid) if cocoid is not None else Path(filename).stem
    return f"{folder}/{filename}", image_id


def read(source: Path) -> Annotation:
    return read_karpathy(source, ANNOTATION, _locate, LAYOUT, OBTAIN)


FORMAT = Format(
    name="coco",
    title="MS-COCO (Karpathy splits)",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits={"train": "train", "restval": "train", "val": "val", "test": "test"},
    person=False,
    max_captions=KARPATHY_CAPTIONS,
    published={"train": (113_287, None), "val": (5_000, None), "test": (5_000, None)},
)
