"""`icfg`: ICFG-PEDES (Ding et al., 2021; images from MSMT17), from `ICFG-PEDES.json` + `imgs/`.

Layout: `DIR/ICFG-PEDES.json`, images at `DIR/imgs/<file_path>`; `file_path` values carry the
split folder and the identity folder, e.g. `test/0627/0627_010_05_0303afternoon_1591_0.jpg`, so
images live in `DIR/imgs/train/` and `DIR/imgs/test/`. Records: `split`, `captions`,
`file_path`, `id` (as CUHK-PEDES); see `pedes` for the shared decisions.

Decisions:
- splits `train` / `test` only (34,674 / 19,848 images; 3,102 / 1,000 identities); there is no
  validation split (the dataset config sets `val_split: null`), and any other split value is
  bad input;
- one caption per image in the released file; all are kept;
- train ids are renumbered 0..N-1 by first appearance (already 0-based and contiguous in the
  release, so they normally stay the same); test ids are kept.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.converters.engine import Annotation, Format
from datamodules.converters.pedes import read_pedes

ANNOTATION = "ICFG-PEDES.json"
LAYOUT = f"DIR/{ANNOTATION} with images at DIR/imgs/<file_path> (imgs/train/..., imgs/test/...)"
OBTAIN = "request from the authors: https://github.com/zifyloo/SSAN"


def read(source: Path) -> Annotation:
    return read_pedes(source, ANNOTATION, "file_path", LAYOUT, OBTAIN)


FORMAT = Format(
    name="icfg",
    title="ICFG-PEDES",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits={"train": "train", "test": "test"},
    person=True,
    published={"train": (34_674, 3_102), "test": (19_848, 1_000)},
)
