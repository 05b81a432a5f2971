"""Converters: public image-text datasets, as their authors distribute them, into the shard format.

    xmodal-bench data convert NAME --source DIR --out ROOT      # writes ROOT/NAME/ (shards + manifest)

| name  | DIR holds                                                      | splits written            |
| ----- | -------------------------------------------------------------- | ------------------------- |
| coco  | dataset_coco.json, train2014/, val2014/                        | train(+restval) / val / test |
| f30k  | dataset_flickr30k.json, flickr30k-images/                      | train / val / test        |
| cuhk  | reid_raw.json, imgs/                                           | train / val / test        |
| icfg  | ICFG-PEDES.json, imgs/train/, imgs/test/                       | train / test              |
| rstp  | data_captions.json, imgs/                                      | train / val / test        |
| jsonl | one .jsonl file ({"image", "captions", "split", "pid"} lines)  | train / val / test        |
| wds   | CLIP_benchmark's layout: {split}/nshards.txt, {split}/{k}.tar     | train / val / test        |

One module per format (its docstring records every format decision), on shared parts:
`annotations` (defensive JSON reading), `records` (entries, bad-input book-keeping), `images`
(read + decode check, bytes kept as given), `engine` (the two-pass streaming pipeline, identity
remapping, the report), `karpathy` and `pedes` (readers shared by two and three formats). The CLI subcommand is
`xmodal_bench.commands.data`.

Importing this package is cheap; a format module (and PIL, webdataset) loads on first use.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from datamodules.converters.engine import ConversionReport, Format

__all__ = ["CONVERTERS", "NAMED", "convert", "get_format"]

CONVERTERS = ("coco", "f30k", "cuhk", "icfg", "rstp", "jsonl", "wds")
NAMED = ("jsonl", "wds")  # converters whose data decides the name (--name) and the protocol (--protocol)


def get_format(name: str) -> Format:
    """The `Format` of converter `name` (one of `CONVERTERS`)."""
    if name not in CONVERTERS:
        from xmodal_bench.errors import UserError

        raise UserError(f"unknown converter {name!r}; choose one of: {', '.join(CONVERTERS)}")
    return importlib.import_module(f"datamodules.converters.{name}").FORMAT


def convert(name: str, source: str | os.PathLike, out: str | os.PathLike, **options: Any) -> ConversionReport:
    """Convert dataset `name` found at `source` into `{out}/{dataset}` (options: see `convert_format`)."""
    from datamodules.converters.engine import convert_format

    return convert_format(get_format(name), source, out, **options)
