"""The built-in synthetic datasets by name: parameters, generation, and the cache check.

| name             | protocol | what                                                       | generator                        |
| ---------------- | -------- | ---------------------------------------------------------- | -------------------------------- |
| `synth`          | caption  | shapes on a grid, partial paraphrased captions              | `datamodules.synthetic`          |
| `synth_reid`     | person   | person-like figures of several identities                   | `datamodules.synthetic`          |
| `synth_pretrain` | caption  | the tiny scale's pretraining corpus (a wider world of both) | `datamodules.synthetic_pretrain` |

Every set is seeded, written through `DatasetWriter`, and records its generator (name, version,
seed, parameters) in its manifest, so `ensure_synthetic` regenerates a set only when it is
missing or was made with other parameters.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from datamodules import synthetic, synthetic_pretrain
from datamodules.manifest import FORMAT_VERSION, dataset_dir, read_manifest, recreate_command
from datamodules.writer import DatasetWriter, dataset_lock
from xmodal_bench.errors import UserError

__all__ = [
    "SYNTHETIC_DATASETS",
    "ensure_synthetic",
    "generate_synthetic",
    "synthetic_is_current",
    "synthetic_params",
]


@dataclass(frozen=True)
class SyntheticSet:
    params: type
    protocol: str
    generate: Callable[[DatasetWriter, Any, int, tqdm], dict[str, Any]]
    validate: Callable[[Any], None]
    images: Callable[[Any], int]  # total images of a parameter set (progress bar)
    version: int


SYNTHETIC_DATASETS: dict[str, SyntheticSet] = {
    "synth": SyntheticSet(
        synthetic.SynthParams,
        "caption",
        lambda w, p, seed, bar: {"oracle_t2i_r1": synthetic.generate_synth(w, p, seed, bar)},
        synthetic.validate_params,
        lambda p: p.train_images + p.val_images + p.test_images,
        synthetic.GENERATOR_VERSION,
    ),
    "synth_reid": SyntheticSet(
        synthetic.SynthReidParams,
        "person",
        lambda w, p, seed, bar: {"oracle_r1": synthetic.generate_reid(w, p, seed, bar)},
        synthetic.validate_params,
        lambda p: (p.train_ids + p.val_ids + p.test_ids) * p.images_per_id,
        synthetic.GENERATOR_VERSION,
    ),
    synthetic_pretrain.NAME: SyntheticSet(
        synthetic_pretrain.SynthPretrainParams,
        "caption",
        synthetic_pretrain.generate,
        synthetic_pretrain.validate,
        lambda p: p.train_images + p.test_images,
        synthetic.GENERATOR_VERSION,
    ),
}


def _entry(name: str) -> SyntheticSet:
    if name not in SYNTHETIC_DATASETS:
        raise UserError(f"unknown synthetic dataset '{name}'; choose one of: {', '.join(SYNTHETIC_DATASETS)}")
    return SYNTHETIC_DATASETS[name]


def synthetic_params(name: str, **overrides: Any) -> Any:
    """Resolve the parameters of synthetic dataset `name` (defaults + `overrides`)."""
    entry = _entry(name)
    known = {f.name for f in fields(entry.params)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise UserError(
            f"unknown {name} parameter(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    if isinstance(overrides.get("image_size"), (list, tuple)):
        overrides["image_size"] = tuple(int(v) for v in overrides["image_size"])
    params = replace(entry.params(), **overrides)
    entry.validate(params)
    return params


def _generator_record(name: str, seed: int, params: Any) -> dict[str, Any]:
    # JSON round trip so tuples compare equal to the lists read back from the manifest
    record = {"name": name, "version": _entry(name).version, "seed": seed, "params": asdict(params)}
    return json.loads(json.dumps(record))


def generate_synthetic(
    name: str, out_root: str | os.PathLike, seed: int = 0, progress: bool = True, **sizes: Any
) -> Path:
    """Generate synthetic dataset `name` under `out_root`; returns its folder.

    `sizes`: any field of the set's parameter class (split sizes, captions per image, image size,
    vocabulary sizes, mention probabilities, image format, shard size).
    """
    entry = _entry(name)
    params = synthetic_params(name, **sizes)
    command = recreate_command(name, out_root) + (f" --seed {seed}" if seed else "")
    with (
        DatasetWriter(
            out_root,
            name,
            protocol=entry.protocol,
            command=command,
            generator=_generator_record(name, seed, params),
            max_images_per_shard=params.shard_images,
        ) as writer,
        tqdm(
            total=entry.images(params),
            desc=f"generating {name}",
            unit="img",
            disable=not progress,
            leave=False,
        ) as bar,
    ):
        facts = entry.generate(writer, params, seed, bar)
        writer.source_info = {"generator": f"datamodules.synthetic_sets ({name})", **facts}
    return dataset_dir(out_root, name)


def synthetic_is_current(out_root: str | os.PathLike, name: str, seed: int = 0, **sizes: Any) -> bool:
    """True when `{out_root}/{name}` is complete and was generated with exactly these parameters."""
    expected = _generator_record(name, seed, synthetic_params(name, **sizes))
    try:
        manifest = read_manifest(out_root, name, verify=False)
    except UserError:
        return False
    # an older format still reads, but a synthetic set is cheap to write again in the current one
    return manifest.get("format_version") == FORMAT_VERSION and manifest.get("generator") == expected


def ensure_synthetic(
    out_root: str | os.PathLike, name: str, seed: int = 0, progress: bool = True, **sizes: Any
) -> Path:
    """Return `{out_root}/{name}`, (re)generating it only if missing or stale.

    Stale = no readable manifest, another manifest format, a missing or truncated shard, or a
    generator version / seed / parameter set that differs from the requested one. Checking and
    generating happen under the dataset lock, so concurrent callers generate it once.
    """
    with dataset_lock(out_root, name):
        if not synthetic_is_current(out_root, name, seed, **sizes):
            generate_synthetic(name, out_root, seed=seed, progress=progress, **sizes)
    return dataset_dir(out_root, name)
