"""`rstp`: RSTPReid (Zhu et al., ACM MM 2021; images from MSMT17), from `data_captions.json` + `imgs/`.

Layout: `DIR/data_captions.json`, images directly in `DIR/imgs/` (`img_path` is a bare file
name such as `0000_c14_0031.jpg`). Records: `id`, `img_path` (not `file_path`), `captions`,
`split`; see `pedes` for the shared decisions.

Decisions:
- splits `train` / `val` / `test` (18,505 / 1,000 / 1,000 images; 3,701 / 200 / 200
  identities): every identity has five images, each with two captions, so one id owns several
  gallery images (the person protocol counts any of them as a hit);
- train ids are renumbered 0..N-1 by first appearance (IRRA uses them as given: they are already
  0..3700 in the release); val/test ids are kept.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.converters.engine import Annotation, Format
from datamodules.converters.pedes import read_pedes

ANNOTATION = "data_captions.json"
LAYOUT = f"DIR/{ANNOTATION} with images at DIR/imgs/<img_path>"
OBTAIN = "request from the authors: https://github.com/NjtechCVLab/RSTPReid-Dataset"


def read(source: Path) -> Annotation:
    return read_pedes(source, ANNOTATION, "img_path", LAYOUT, OBTAIN)


FORMAT = Format(
    name="rstp",
    title="RSTPReid",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits={"train": "train", "val": "val", "test": "test"},
    person=True,
    published={"train": (18_505, 3_701), "val": (1_000, 200), "test": (1_000, 200)},
)
