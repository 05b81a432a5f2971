"""The dataset manifest: `{root}/{dataset}/manifest.json`, the one file that says a dataset is complete.

Layout of the manifest (FORMAT_VERSION 2)::

    {
      "format_version": 2,
      "dataset": "synth",
      "protocol": "caption" | "person",
      "command": "xmodal-bench data synth --name synth --out data",   # how to (re)create it
      "source": {...},            # free information from the converter / generator
      "generator": {...} | null,  # synthetic sets only: name, version, seed, params (staleness check)
      "splits": {
        "train": {
          "images": 4000, "captions": 20000, "identities": null,   # identities: person sets only
          "shards": [{"name": "0.tar", "images": 500, "captions": 2500,
                      "size": 123456, "sha256": "..."}, ...]
        }, ...
      }
    }

Shard `name`s are file names inside `{root}/{dataset}/{split}/`, listed in sample order; in
format 2 they are `0.tar, 1.tar, ...` (CLIP_benchmark's names, with `{split}/nshards.txt` and
`dataset_type.txt` beside them) and every sample's `json` carries `caption_ids`.

Versions: format 2 is written. Format 1 (shards `shard-{k:06d}.tar`, no caption ids, no
CLIP_benchmark files) still reads, with one warning naming the command that re-creates the set
in format 2; any other version is refused with one line naming that command.

Integrity policy (`read_manifest(..., verify=...)`):
- always: the manifest exists, parses, has this FORMAT_VERSION and a sane structure, every shard
  file exists and has the recorded size (a `stat`, cheap even for COCO-sized sets);
- `verify=True`: additionally hash every shard and compare sha256 (slow: reads every byte);
- `verify=None` (the default, "auto"): hash only shards that were never verified on this disk.
  `{root}/{dataset}/.verified.json` remembers, per shard, the (size, mtime_ns, sha256) seen at the
  last successful hash (the writer seeds it, so freshly written data is never re-hashed); a shard
  whose size or mtime changed since, or that was copied in without its record, is hashed once.
  When the dataset folder is read-only the record is simply not updated;
- `verify=False`: sizes only.
The manifest is written last and atomically (temp file + `os.replace`), so its presence means
every shard it lists was completely written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.errors import UserError

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)  # 1: before CLIP_benchmark's shard names and caption ids
MANIFEST_NAME = "manifest.json"
VERIFIED_NAME = ".verified.json"
SYNTHETIC_NAMES = ("synth", "synth_reid", "synth_pretrain")
PROTOCOLS = ("caption", "person")

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PROTOCOLS",
    "READABLE_VERSIONS",
    "SYNTHETIC_NAMES",
    "dataset_dir",
    "file_sha256",
    "manifest_path",
    "read_manifest",
    "recreate_command",
    "shard_paths",
    "write_manifest",
]


def dataset_dir(root: str | os.PathLike, dataset: str) -> Path:
    """`{root}/{dataset}`: where a dataset's split folders and manifest live."""
    return Path(root) / dataset


def manifest_path(root: str | os.PathLike, dataset: str) -> Path:
    """`{root}/{dataset}/manifest.json`."""
    return dataset_dir(root, dataset) / MANIFEST_NAME


def recreate_command(dataset: str, root: str | os.PathLike) -> str:
    """The command a user runs to (re)create `dataset` under `root`."""
    if dataset in SYNTHETIC_NAMES:
        return f"xmodal-bench data synth --name {dataset} --out {root}"
    return f"xmodal-bench data convert {dataset} --source DIR --out {root}"


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(directory: str | os.PathLike, manifest: Mapping[str, Any]) -> Path:
    """Validate `manifest` and write it atomically as `{directory}/manifest.json`."""
    _check_structure(dict(manifest), where=str(directory), fix="fix the writer")
    path = Path(directory) / MANIFEST_NAME
    atomic_write_json(path, manifest)
    return path


def shard_paths(root: str | os.PathLike, dataset: str, manifest: Mapping[str, Any], split: str) -> list[Path]:
    """Absolute paths of a split's shards, in manifest (= sample) order."""
    base = dataset_dir(root, dataset) / split
    return [base / shard["name"] for shard in manifest["splits"][split]["shards"]]


def read_manifest(
    root: str | os.PathLike,
    dataset: str,
    verify: bool | None = None,
    splits: list[str] | None = None,
    lenient: Collection[str] = (),
) -> dict[str, Any]:
    """Read and validate `{root}/{dataset}/manifest.json`; raise one-line `UserError`s on any problem.

    `verify`: see the module docstring (None = hash only shards not yet verified on this disk).
    `splits`: check only these splits' shards (default: all).
    `lenient`: splits whose missing, resized or mismatching shards are logged instead of refused
    (training with `data.on_error=skip`: the reader then skips and counts what it cannot read).
    """
    path = manifest_path(root, dataset)
    fix = recreate_command(dataset, root)
    if not path.is_file():
        raise UserError(f"dataset '{dataset}' not found: {path} is missing; create it with: {fix}")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"unreadable manifest {path} ({exc}); re-create the dataset with: {fix}") from None
    if not isinstance(manifest, dict):
        raise UserError(f"bad manifest {path} (not a JSON object); re-create the dataset with: {fix}")
    version = manifest.get("format_version")
    if isinstance(manifest.get("command"), str) and manifest["command"]:
        fix = manifest["command"]
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise UserError(
            f"manifest {path} has format version {version!r}, this xmodal-bench reads "
            f"{' and '.join(map(str, READABLE_VERSIONS))}; re-create the dataset with: {fix}"
        )
    _check_structure(
        manifest, where=str(path), fix=f"re-create the dataset with: {fix}", versions=READABLE_VERSIONS
    )
    if version != FORMAT_VERSION:
        _warn_old(path, version, fix)
    if manifest["dataset"] != dataset:
        raise UserError(
            f"manifest {path} describes dataset '{manifest['dataset']}', not '{dataset}'; "
            f"re-create the dataset with: {fix}"
        )
    check = list(manifest["splits"]) if splits is None else splits
    for split in check:
        if split not in manifest["splits"]:
            known = ", ".join(manifest["splits"]) or "none"
            raise UserError(f"dataset '{dataset}' has no split '{split}' (splits: {known}) in {path}")
    _check_shards(root, dataset, manifest, check, verify, fix, lenient)
    return manifest


def _check_shards(
    root: str | os.PathLike,
    dataset: str,
    manifest: dict[str, Any],
    splits: list[str],
    verify: bool | None,
    fix: str,
    lenient: Collection[str] = (),
) -> None:
    base = dataset_dir(root, dataset)
    record_path = base / VERIFIED_NAME
    record = _load_record(record_path) if verify is None else {}
    changed = False
    for split in splits:

        def problem(message: str, split: str = split) -> None:
            if split not in lenient:
                raise UserError(f"{message}; re-create the dataset with: {fix}")
            logging.getLogger("xmodal_bench.data").warning(
                "%s; its unreadable samples will be skipped", message
            )

        for shard in manifest["splits"][split]["shards"]:
            rel = f"{split}/{shard['name']}"
            shard_path = base / rel
            try:
                st = shard_path.stat()
            except OSError:
                problem(f"shard {shard_path} listed in the manifest is missing")
                continue
            if st.st_size != shard["size"]:
                problem(f"shard {shard_path} has {st.st_size} bytes, the manifest says {shard['size']}")
                continue
            if verify is False:
                continue
            seen = record.get(rel)
            if verify is None and seen == [st.st_size, st.st_mtime_ns, shard["sha256"]]:
                continue
            digest = file_sha256(shard_path)
            if digest != shard["sha256"]:
                problem(f"shard {shard_path} does not match its sha256 in the manifest (corrupt or replaced)")
                continue
            record[rel] = [st.st_size, st.st_mtime_ns, digest]
            changed = True
    if verify is None and changed:
        # Best effort: a read-only dataset folder just means we hash again next time.
        with contextlib.suppress(OSError):
            atomic_write_json(record_path, record)


_warned_old: set[str] = set()


def _warn_old(path: Path, version: int, fix: str) -> None:
    """One warning per manifest and process: an older format still reads, without the newer parts."""
    if str(path) in _warned_old:
        return
    _warned_old.add(str(path))
    logging.getLogger("xmodal_bench.data").warning(
        "%s is in manifest format %s (no caption ids, not readable by CLIP_benchmark); it still "
        "reads; to get format %s re-create it with: %s",
        path,
        version,
        FORMAT_VERSION,
        fix,
    )


def _load_record(path: Path) -> dict[str, Any]:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def seed_verified_record(directory: str | os.PathLike, manifest: Mapping[str, Any]) -> None:
    """Record the freshly written shards of `directory` as verified (used by the writer)."""
    base = Path(directory)
    record: dict[str, Any] = {}
    for split, info in manifest["splits"].items():
        for shard in info["shards"]:
            rel = f"{split}/{shard['name']}"
            st = (base / rel).stat()
            record[rel] = [st.st_size, st.st_mtime_ns, shard["sha256"]]
    atomic_write_json(base / VERIFIED_NAME, record)


def _check_structure(
    manifest: dict[str, Any], where: str, fix: str, versions: Collection[int] = (FORMAT_VERSION,)
) -> None:
    """Raise a one-line UserError unless `manifest` has a known version's structure and consistent counts."""

    def bad(why: str) -> UserError:
        return UserError(f"bad manifest {where}: {why}; {fix}")

    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in versions:
        raise bad(f"format_version must be {' or '.join(map(str, versions))}")
    if not isinstance(manifest.get("dataset"), str) or not manifest["dataset"]:
        raise bad("'dataset' must be a non-empty string")
    if manifest.get("protocol") not in PROTOCOLS:
        raise bad(f"'protocol' must be one of {', '.join(PROTOCOLS)}")
    splits = manifest.get("splits")
    if not isinstance(splits, dict) or not splits:
        raise bad("'splits' must be a non-empty object")
    for split, info in splits.items():
        if not isinstance(info, dict) or not isinstance(info.get("shards"), list):
            raise bad(f"split '{split}' needs a 'shards' list")
        for key in ("images", "captions"):
            if not isinstance(info.get(key), int) or info[key] < 0:
                raise bad(f"split '{split}' needs an integer '{key}'")
        identities = info.get("identities")
        if identities is not None and not isinstance(identities, int):
            raise bad(f"split '{split}': 'identities' must be an integer or null")
        images = captions = 0
        for k, shard in enumerate(info["shards"]):
            if not isinstance(shard, dict):
                raise bad(f"split '{split}': shard entries must be objects")
            name = shard.get("name")
            if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
                raise bad(f"split '{split}': bad shard name {name!r}")
            if version >= 2 and name != f"{k}.tar":
                raise bad(f"split '{split}': shard {k} must be named '{k}.tar', not {name!r}")
            for key in ("images", "captions", "size"):
                if not isinstance(shard.get(key), int) or shard[key] < 0:
                    raise bad(f"shard {split}/{name} needs an integer '{key}'")
            if not isinstance(shard.get("sha256"), str) or len(shard["sha256"]) != 64:
                raise bad(f"shard {split}/{name} needs a sha256")
            images += shard["images"]
            captions += shard["captions"]
        if images != info["images"] or captions != info["captions"]:
            raise bad(f"split '{split}' totals do not match its shards")
