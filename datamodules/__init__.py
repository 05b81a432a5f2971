"""The shared data layer of xmodal-bench: shard format, writer, manifest, synthetic sets, DataModule.

Public API (see each module's docstring for the details):

- `DatasetWriter` (writer): one sample per image into `{root}/{dataset}/{split}/{k}.tar` + manifest (CLIP_benchmark reads it too).
- `read_manifest`, `write_manifest`, `FORMAT_VERSION`, ... (manifest): the integrity contract.
- `generate_synthetic`, `ensure_synthetic` (synthetic_sets): the built-in `synth`, `synth_reid`
  and `synth_pretrain` sets (their worlds: `synthetic`, `synthetic_pretrain`).
- `eval_transform`, `train_transform`, `resize_transform` (transforms): CLIP normalisation, IRRA aug.
- `RetrievalDataModule` (datamodule): the Lightning DataModule; `TrainStream`, `EvalImageStream`,
  `EvalTextStream` (streams) are the iterable datasets behind it.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # for type checkers and IDEs; at runtime the names load lazily (below)
    from datamodules.datamodule import RetrievalDataModule
    from datamodules.manifest import (
        FORMAT_VERSION,
        MANIFEST_NAME,
        SYNTHETIC_NAMES,
        dataset_dir,
        manifest_path,
        read_manifest,
        recreate_command,
        shard_paths,
        write_manifest,
    )
    from datamodules.streams import EpochDataLoader, EvalImageStream, EvalTextStream, ShardInfo, TrainStream
    from datamodules.synthetic import GENERATOR_VERSION, SynthParams, SynthReidParams
    from datamodules.synthetic_sets import ensure_synthetic, generate_synthetic, synthetic_params
    from datamodules.transforms import (
        AUGMENTATIONS,
        OPENAI_DATASET_MEAN,
        OPENAI_DATASET_STD,
        eval_transform,
        resize_transform,
        train_transform,
    )
    from datamodules.writer import DatasetWriter

# Lazy exports: `import datamodules.synthetic` (e.g. the `data synth` CLI) must not pay for
# importing Lightning; names are resolved from their module on first access.
_EXPORTS = {
    "AUGMENTATIONS": "datamodules.transforms",
    "FORMAT_VERSION": "datamodules.manifest",
    "GENERATOR_VERSION": "datamodules.synthetic",
    "MANIFEST_NAME": "datamodules.manifest",
    "OPENAI_DATASET_MEAN": "datamodules.transforms",
    "OPENAI_DATASET_STD": "datamodules.transforms",
    "SYNTHETIC_NAMES": "datamodules.manifest",
    "DatasetWriter": "datamodules.writer",
    "EpochDataLoader": "datamodules.streams",
    "EvalImageStream": "datamodules.streams",
    "EvalTextStream": "datamodules.streams",
    "RetrievalDataModule": "datamodules.datamodule",
    "ShardInfo": "datamodules.streams",
    "SynthParams": "datamodules.synthetic",
    "SynthReidParams": "datamodules.synthetic",
    "TrainStream": "datamodules.streams",
    "dataset_dir": "datamodules.manifest",
    "ensure_synthetic": "datamodules.synthetic_sets",
    "eval_transform": "datamodules.transforms",
    "generate_synthetic": "datamodules.synthetic_sets",
    "manifest_path": "datamodules.manifest",
    "read_manifest": "datamodules.manifest",
    "recreate_command": "datamodules.manifest",
    "resize_transform": "datamodules.transforms",
    "shard_paths": "datamodules.manifest",
    "synthetic_params": "datamodules.synthetic_sets",
    "train_transform": "datamodules.transforms",
    "write_manifest": "datamodules.manifest",
}

__all__ = [
    "AUGMENTATIONS",
    "FORMAT_VERSION",
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD",
    "SYNTHETIC_NAMES",
    "DatasetWriter",
    "EpochDataLoader",
    "EvalImageStream",
    "EvalTextStream",
    "RetrievalDataModule",
    "ShardInfo",
    "SynthParams",
    "SynthReidParams",
    "TrainStream",
    "dataset_dir",
    "ensure_synthetic",
    "eval_transform",
    "generate_synthetic",
    "manifest_path",
    "read_manifest",
    "recreate_command",
    "resize_transform",
    "shard_paths",
    "synthetic_params",
    "train_transform",
    "write_manifest",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'datamodules' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
