"""`DatasetWriter`: writes a dataset in the shared shard format (one sample per image) plus its manifest.

Used by every converter and by the synthetic generator. Guarantees:
- one sample per image: `__key__` = `{split}-{index:08d}`, the image bytes as given under their
  extension (`jpg`/`png`/`webp`), `json` = {"image_id", "caption_ids", "captions", "pid", "split",
  "source"} and `txt` = the captions joined by newlines (CLIP_benchmark's retrieval loader reads that);
- ids: `image_id` as the source gives it, and one id per caption (`caption_ids`, as the source
  gives them, else `{image_id}#{k}`, the Flickr30K token-file convention); all strings, unique
  within a split;
- shards `{root}/{dataset}/{split}/{k}.tar` (k = 0, 1, ...), at most `max_images_per_shard`
  images (and, if set, about `max_shard_bytes` bytes) each, plus `{split}/nshards.txt` and
  `dataset_type.txt` (`retrieval`) at the dataset root: CLIP_benchmark's `wds/` loader
  (`build_wds_dataset`) reads the folder as it is. The manifest stays the source of truth
  (those two files are derived from it and written with it);
- deterministic: same calls => byte-identical shards (fixed tar mtime/owner/mode, sorted members);
- crash-safe: everything is written into a hidden staging folder `{root}/.{dataset}.partial-*`;
  only a successful `close()` writes the manifest there and swaps the folder into place. An
  exception (or a kill) leaves the previous dataset, if any, untouched and never a manifest that
  describes incomplete shards. Leftover staging folders are removed by the next writer;
- one writer per dataset at a time: an advisory lock `{root}/.{dataset}.lock` (re-entrant in a process).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from webdataset import TarWriter

from datamodules.manifest import (
    FORMAT_VERSION,
    PROTOCOLS,
    dataset_dir,
    seed_verified_record,
    write_manifest,
)

try:  # POSIX advisory locks; elsewhere writers are simply not serialised.
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DATASET_TYPE_NAME",
    "IMAGE_EXTENSIONS",
    "NSHARDS_NAME",
    "SPLIT_ORDER",
    "DatasetWriter",
    "caption_ids_for",
    "dataset_lock",
    "shard_name",
]

IMAGE_EXTENSIONS = ("jpg", "png", "webp")
SPLIT_ORDER = ("train", "val", "test")
TAR_MTIME = 0  # fixed member mtime => reproducible tars (an int: a float forces a PAX header)
_SPLIT_RE = re.compile(r"^[a-z][a-z0-9_]*$")
_EXT_ALIASES = {"jpeg": "jpg", "jpg": "jpg", "png": "png", "webp": "webp"}
NSHARDS_NAME = "nshards.txt"  # per split: the shard count (CLIP_benchmark globs {0..N-1}.tar)
DATASET_TYPE_NAME = "dataset_type.txt"  # at the dataset root: `retrieval` for CLIP_benchmark


def shard_name(k: int) -> str:
    """File name of the k-th shard of a split (CLIP_benchmark's `{k}.tar`)."""
    return f"{k}.tar"


def caption_ids_for(image_id: str, count: int) -> list[str]:
    """Stable caption ids for a source that has none: `{image_id}#{k}` (Flickr30K's token files)."""
    return [f"{image_id}#{k}" for k in range(count)]


_locks: dict[str, list[Any]] = {}  # path -> [file object, depth]
_locks_guard = threading.Lock()


@contextlib.contextmanager
def dataset_lock(root: str | os.PathLike, dataset: str) -> Iterator[None]:
    """Hold the advisory lock `{root}/.{dataset}.lock` (blocking; re-entrant within this process)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    key = str((root / f".{dataset}.lock").resolve())
    with _locks_guard:
        entry = _locks.get(key)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        f = open(key, "a+b")  # noqa: SIM115 - held across the yield
        if fcntl is not None:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        entry = [f, 1]
        with _locks_guard:
            _locks[key] = entry
    try:
        yield
    finally:
        with _locks_guard:
            entry[1] -= 1
            release = entry[1] == 0
            if release:
                del _locks[key]
        if release:
            if fcntl is not None:
                fcntl.flock(entry[0].fileno(), fcntl.LOCK_UN)
            entry[0].close()


class _SplitState:
    """Bookkeeping of one split while writing: current shard, counts, finished shard records."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.images = 0
        self.captions = 0
        self.pids: set[int] = set()
        self.pid_kinds: set[bool] = set()  # {True} person split, {False} caption split
        self.image_ids: set[str] = set()
        self.caption_ids: set[str] = set()
        self.shards: list[dict[str, Any]] = []
        self.file: Any = None
        self.tar: TarWriter | None = None
        self.shard_images = 0
        self.shard_captions = 0
        self.shard_bytes = 0


class DatasetWriter:
    """Write `{root}/{dataset}` sample by sample; use as a context manager.

    `protocol`: "caption" or "person" (default: "person" if any sample has a pid, else "caption").
    `command`: the command line that (re)creates this dataset (stored in the manifest and named in
    error messages). `source_info`: free JSON-able information for the manifest's `source`.
    `generator`: synthetic sets record {name, version, seed, params} for staleness checks.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        dataset: str,
        *,
        protocol: str | None = None,
        command: str | None = None,
        source_info: Mapping[str, Any] | None = None,
        generator: Mapping[str, Any] | None = None,
        max_images_per_shard: int = 1000,
        max_shard_bytes: int | None = None,
    ) -> None:
        if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", dataset):
            raise ValueError(f"bad dataset name {dataset!r}")
        if protocol is not None and protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {protocol!r}")
        if max_images_per_shard < 1:
            raise ValueError("max_images_per_shard must be >= 1")
        self.root = Path(root)
        self.dataset = dataset
        self.protocol = protocol
        self.command = command
        self.source_info = dict(source_info or {})
        self.generator = dict(generator) if generator is not None else None
        self.max_images_per_shard = max_images_per_shard
        self.max_shard_bytes = max_shard_bytes
        self.final_dir = dataset_dir(self.root, dataset)
        self.manifest: dict[str, Any] | None = None
        self._staging: Path | None = None
        self._splits: dict[str, _SplitState] = {}
        self._lock_cm: Any = None
        self._closed = False

    # -- lifecycle -----------------------------------------------------------------------------
    def __enter__(self) -> DatasetWriter:
        self.open()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def open(self) -> None:
        """Take the dataset lock and create a fresh staging folder (removing stale ones)."""
        if self._staging is not None:
            return
        self._lock_cm = dataset_lock(self.root, self.dataset)
        self._lock_cm.__enter__()
        for old in self.root.glob(f".{self.dataset}.partial-*"):
            shutil.rmtree(old, ignore_errors=True)
        for old in self.root.glob(f".{self.dataset}.old-*"):
            shutil.rmtree(old, ignore_errors=True)
        self._staging = self.root / f".{self.dataset}.partial-{uuid.uuid4().hex[:12]}"
        self._staging.mkdir(parents=True)

    def add(
        self,
        split: str,
        image_bytes: bytes,
        ext: str,
        image_id: str,
        captions: Sequence[str],
        pid: int | None = None,
        source: str = "",
        caption_ids: Sequence[str | int] | None = None,
    ) -> str:
        """Append one image (with all its captions) to `split`; returns its key `{split}-{index:08d}`.

        `caption_ids`: one id per caption as the source gives them (default `{image_id}#{k}`).
        """
        if self._closed:
            raise RuntimeError("DatasetWriter is closed")
        self.open()
        if not _SPLIT_RE.match(split):
            raise ValueError(f"bad split name {split!r} (lowercase letters, digits, underscore)")
        ext_norm = _EXT_ALIASES.get(ext.lower().lstrip("."))
        if ext_norm is None:
            raise ValueError(f"unsupported image extension {ext!r} (use one of {IMAGE_EXTENSIONS})")
        if not isinstance(image_bytes, (bytes, bytearray, memoryview)) or len(image_bytes) == 0:
            raise ValueError(f"image {image_id!r}: image_bytes must be non-empty bytes")
        captions = list(captions)
        if not captions or not all(isinstance(c, str) and c.strip() and "\n" not in c for c in captions):
            raise ValueError(f"image {image_id!r}: captions must be non-empty single-line strings")
        if pid is not None and (isinstance(pid, bool) or not isinstance(pid, int)):
            raise ValueError(f"image {image_id!r}: pid must be an int or None")
        state = self._split(split)
        image_id = str(image_id)
        if image_id in state.image_ids:
            raise ValueError(f"duplicate image_id {image_id!r} in split {split!r}")
        if caption_ids is None:
            cap_ids = caption_ids_for(image_id, len(captions))
        else:
            cap_ids = [str(c) for c in caption_ids]
            if len(cap_ids) != len(captions) or not all(cap_ids):
                raise ValueError(f"image {image_id!r}: need one non-empty caption id per caption")
        if len(set(cap_ids)) != len(cap_ids) or not state.caption_ids.isdisjoint(cap_ids):
            raise ValueError(f"image {image_id!r}: duplicate caption id in split {split!r}")
        state.image_ids.add(image_id)
        state.caption_ids.update(cap_ids)
        state.pid_kinds.add(pid is not None)
        if len(state.pid_kinds) > 1:
            raise ValueError(f"split {split!r} mixes images with and without pid")
        if pid is not None:
            state.pids.add(pid)

        if (
            state.tar is None
            or state.shard_images >= self.max_images_per_shard
            or (self.max_shard_bytes is not None and state.shard_bytes >= self.max_shard_bytes)
        ):
            self._next_shard(state)
        key = f"{split}-{state.images:08d}"
        meta = {
            "image_id": image_id,
            "caption_ids": cap_ids,
            "captions": captions,
            "pid": pid,
            "split": split,
            "source": source,
        }
        sample = {
            "__key__": key,
            ext_norm: bytes(image_bytes),
            "json": json.dumps(meta, ensure_ascii=False, sort_keys=True).encode("utf-8"),
            "txt": "\n".join(captions).encode("utf-8"),
        }
        assert state.tar is not None
        state.shard_bytes += state.tar.write(sample)
        state.images += 1
        state.captions += len(captions)
        state.shard_images += 1
        state.shard_captions += len(captions)
        return key

    def close(self) -> dict[str, Any]:
        """Finish shards, write the manifest (last), swap the dataset into place; returns the manifest."""
        if self._closed:
            assert self.manifest is not None
            return self.manifest
        self.open()
        try:
            for state in self._splits.values():
                self._finish_shard(state)
                (state.folder / NSHARDS_NAME).write_text(f"{len(state.shards)}\n", encoding="utf-8")
            manifest = self._build_manifest()
            assert self._staging is not None
            (self._staging / DATASET_TYPE_NAME).write_text("retrieval\n", encoding="utf-8")
            write_manifest(self._staging, manifest)
            seed_verified_record(self._staging, manifest)
            self._swap_into_place()
            self.manifest = manifest
            self._closed = True
        except BaseException:
            self.abort()
            raise
        self._release()
        return manifest

    def abort(self) -> None:
        """Drop everything written so far; the previous dataset (if any) stays as it was."""
        for state in self._splits.values():
            with contextlib.suppress(Exception):
                if state.tar is not None:
                    state.tar.close()
            with contextlib.suppress(Exception):
                if state.file is not None:
                    state.file.close()
            state.tar = state.file = None
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        self._closed = True
        self._release()

    # -- internals -----------------------------------------------------------------------------
    def _release(self) -> None:
        if self._lock_cm is not None:
            self._lock_cm.__exit__(None, None, None)
            self._lock_cm = None

    def _split(self, split: str) -> _SplitState:
        state = self._splits.get(split)
        if state is None:
            assert self._staging is not None
            folder = self._staging / split
            folder.mkdir(parents=True, exist_ok=True)
            state = self._splits[split] = _SplitState(folder)
        return state

    def _next_shard(self, state: _SplitState) -> None:
        self._finish_shard(state)
        path = state.folder / shard_name(len(state.shards))
        state.file = open(path, "wb")  # noqa: SIM115 - closed in _finish_shard
        state.tar = TarWriter(state.file, encoder=False, mtime=TAR_MTIME, user="", group="", mode=0o444)
        state.shard_images = state.shard_captions = state.shard_bytes = 0

    def _finish_shard(self, state: _SplitState) -> None:
        if state.tar is None:
            return
        state.tar.close()
        state.file.flush()
        os.fsync(state.file.fileno())
        state.file.close()
        path = Path(state.file.name)
        state.tar = state.file = None
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
        state.shards.append(
            {
                "name": path.name,
                "images": state.shard_images,
                "captions": state.shard_captions,
                "size": path.stat().st_size,
                "sha256": digest.hexdigest(),
            }
        )

    def _build_manifest(self) -> dict[str, Any]:
        if not self._splits:
            raise ValueError(f"dataset {self.dataset!r}: nothing was written")
        person = any(True in s.pid_kinds for s in self._splits.values())
        protocol = self.protocol or ("person" if person else "caption")
        order = [s for s in SPLIT_ORDER if s in self._splits] + sorted(
            s for s in self._splits if s not in SPLIT_ORDER
        )
        splits: dict[str, Any] = {}
        for name in order:
            state = self._splits[name]
            is_person = True in state.pid_kinds
            if protocol == "person" and not is_person:
                raise ValueError(f"person dataset {self.dataset!r}: split {name!r} has no pids")
            if name == "train" and is_person and state.pids != set(range(len(state.pids))):
                raise ValueError(
                    f"dataset {self.dataset!r}: train pids must be contiguous 0..N-1 (remap them first)"
                )
            splits[name] = {
                "images": state.images,
                "captions": state.captions,
                "identities": len(state.pids) if is_person else None,
                "shards": state.shards,
            }
        return {
            "format_version": FORMAT_VERSION,
            "dataset": self.dataset,
            "protocol": protocol,
            "command": self.command or "",
            "source": self.source_info,
            "generator": self.generator,
            "splits": splits,
        }

    def _swap_into_place(self) -> None:
        """Replace `{root}/{dataset}` by the staging folder (old one renamed away, then deleted)."""
        assert self._staging is not None
        old = None
        if self.final_dir.exists():
            old = self.root / f".{self.dataset}.old-{uuid.uuid4().hex[:12]}"
            # Two renames: if we die between them the dataset name is simply absent (readers say
            # "missing, run ..."), never a folder whose manifest disagrees with its shards.
            os.replace(self.final_dir, old)
        os.replace(self._staging, self.final_dir)
        self._staging = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
