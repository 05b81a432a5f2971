"""`cuhk`: CUHK-PEDES (Li et al., CVPR 2017), from `reid_raw.json` + `imgs/`.

Layout: `DIR/reid_raw.json`, images at `DIR/imgs/<file_path>`; `file_path` values look like
`CUHK01/0363004.png`, `CUHK03/299_4.jpg`, `Market/...jpg`, `train_query/p8848_s17661.jpg`,
`test_query/...`, and `cam_a/...`, `cam_b/...` (VIPeR). Records: `split`, `captions`,
`file_path`, `id` (`processed_tokens` ignored); see `pedes` for the shared decisions.

Decisions:
- splits `train` / `val` / `test` (34,054 / 3,078 / 3,074 images; 11,003 / 1,000 / 1,000
  identities); IRRA files any other value under val, we report it as bad input instead;
- ids in the file start at 1; train ids are renumbered 0..N-1 by first appearance (the file
  lists train identities in ascending order, so this is IRRA's `id - 1`); val/test ids are kept;
- images come as JPEG and PNG, stored as given; the VIPeR folders may hold BMP files, which the
  shard format cannot carry: they are re-encoded losslessly as PNG and counted in the report.
"""

from __future__ import annotations

from pathlib import Path

from datamodules.converters.engine import Annotation, Format
from datamodules.converters.pedes import read_pedes

ANNOTATION = "reid_raw.json"
LAYOUT = f"DIR/{ANNOTATION} with images at DIR/imgs/<file_path> (CUHK01/, CUHK03/, Market/, cam_a/, ...)"
OBTAIN = (
    "request from the authors: https://github.com/ShuangLI59/Person-Search-with-Natural-Language-Description"
)


def read(source: Path) -> Annotation:
    return read_pedes(source, ANNOTATION, "file_path", LAYOUT, OBTAIN)


FORMAT = Format(
    name="cuhk",
    title="CUHK-PEDES",
    layout=LAYOUT,
    obtain=OBTAIN,
    read=read,
    splits={"train": "train", "val": "val", "test": "test"},
    person=True,
    published={"train": (34_054, 11_003), "val": (3_078, 1_000), "test": (3_074, 1_000)},
)
