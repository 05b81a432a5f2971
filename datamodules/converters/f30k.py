"""`f30k`: Flickr30K with Karpathy's splits, from `dataset_flickr30k.json` + `flickr30k-images/`.

Layout: `DIR/dataset_flickr30k.json`, images at `DIR/flickr30k-images/<filename>` (the folder
name of the official image archive). Karpathy's Flickr30K records have no `filepath`; one there
is ignored.

Decisions:
- splits: `train` -> train (29,000 images), `val` -> val (1,014), `test` -> test (1,000, the
  "1K test" every paper reports); there is no `restval` in this file, so one is bad input;
- five captions per image in every split (`raw`, whitespace-normalised), see `karpathy`;
- image id = the file name's stem, i.e. the Flickr photo id (`1000092795`), which other
  Flickr30K files (Entities, the token file) key on; Karpathy's `imgid` is only a position;
- caption ids = Karpathy's `sentids` (`sentid` of each sentence);
- image order within a split = file order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from datamodules.converters.engine import Annotation, Format
from datamodules.converters.karpathy import KARPATHY_CAPTIONS, read_karpathy

ANNOTATION = "dataset_flickr30k.json"
IMAGE_FOLDER = "flickr30k-images"
LAYOUT = f"DIR/{ANNOTATION} with images at DIR/{IMAGE_FOLDER}/*.jpg"
OBTAIN = (
    "images: the Flickr30K request form (shannon.cs.illinois.edu/DenotationGraph); splits: "
    "dataset_flickr30k.json from Karpathy's caption_datasets.zip (cs.stanford.edu/people/karpathy/deepimagesent)"
)


def _locate(record: Mapping[str, Any], filename: str) -> tuple[str, str]:
    return f"{IMAGE_FOLDER}/{filename}", Path(filename).stem


def read(source: Path) -> Annotation:
    return read_karpathy(source, ANNOTATION, _locate, LAYOUT, OBTAIN)


FORMAT = Format(
    name="f30k",
    title="Flickr30K (Karpathy splits)",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits={"train": "train", "val": "val", "test": "test"},
    person=False,
    max_captions=KARPATHY_CAPTIONS,
    published={"train": (29_000, None), "val": (1_014, None), "test": (1_000, None)},
)
