"""Caption vectors of a whole dataset, computed once and cached beside its shards.

`load_caption_store(root, dataset, provider, ...)` reads every caption of every split from the
shards (only their `json` members, in manifest order, with a progress bar), turns them into
vectors (`bcls.text_sim`) and caches the result as

    {root}/{dataset}/bcls/{provider}-{manifest sha256[:16]}.pt      (sbert: sbert-{model}-{sha}.pt)

written atomically (temp file + `os.replace`). The key is the provider (and model) plus the
sha256 of `manifest.json`: a re-converted or re-generated dataset has a new manifest, so its
stale cache is ignored (and removed once the new one is written). When the dataset folder is
read-only the vectors are simply kept in memory.

Row layout: the captions of split s are rows offsets[s] .. offsets[s] + captions(s) - 1 in
caption-index order, and image i of split s owns captions image_starts[s][i] .. image_starts[s][i+1]-1
(captions are stored with their image, so each image's captions are contiguous).
"""

from __future__ import annotations

import json
import logging
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from datamodules.manifest import file_sha256, manifest_path, read_manifest, shard_paths
from xmodal_bench.atomic import atomic_open
from xmodal_bench.bcls.text_sim import PROVIDERS, CaptionVectors, sbert_vectors, tfidf_vectors
from xmodal_bench.errors import UserError

log = logging.getLogger(__name__)
STORE_VERSION = 1


@dataclass
class CaptionStore:
    """Caption vectors of some splits of one dataset, and which captions belong to which image."""

    key: str  # provider key, e.g. "tfidf" or "sbert-all-MiniLM-L6-v2"
    manifest_sha256: str
    vectors: CaptionVectors
    offsets: dict[str, int]  # split -> first row
    image_starts: dict[str, Tensor]  # split -> [images + 1] caption offsets within the split

    def _split(self, split: str) -> Tensor:
        if split not in self.image_starts:
            raise KeyError(f"caption store has no split {split!r} (has {', '.join(self.image_starts)})")
        return self.image_starts[split]

    def caption_rows(self, split: str, caption_index: Tensor) -> Tensor:
        self._split(split)
        return caption_index.cpu().long() + self.offsets[split]

    def image_caption_rows(self, split: str, image_index: Tensor) -> tuple[Tensor, Tensor]:
        """(rows [I, K] of each image's captions, padded with 0; mask [I, K] of the real ones)."""
        starts = self._split(split)
        image_index = image_index.cpu().long()
        first, count = starts[image_index], starts[image_index + 1] - starts[image_index]
        slots = torch.arange(max(1, int(count.max())) if len(count) else 1)
        mask = slots[None, :] < count[:, None]
        rows = torch.where(mask, first[:, None] + slots[None, :] + self.offsets[split], 0)
        return rows, mask

    def relevance(self, split: str, image_index: Tensor, caption_index: Tensor) -> Tensor:
        """r [I, C]: max over image i's captions of their cosine with caption c (CPU, float32).

        The same matrix serves both directions: a caption query against candidate images reads a
        column, an image query (represented by its captions) against candidate captions reads a row.
        """
        rows, mask = self.image_caption_rows(split, image_index)
        sim = self.vectors.similarity(rows[mask], self.caption_rows(split, caption_index))
        full = torch.full((mask.numel(), sim.shape[1]), -torch.inf)
        full[mask.flatten()] = sim
        return full.view(*mask.shape, -1).amax(dim=1).clamp(min=0)


def read_captions(
    root: str | os.PathLike, dataset: str, manifest: dict[str, Any], split: str
) -> list[list[str]]:
    """Every image's captions of `split`, in image-index order (reads only the shards' json members)."""
    per_image: list[list[str]] = []
    for path in tqdm(shard_paths(root, dataset, manifest, split), desc=f"captions {split}", leave=False):
        found: list[tuple[int, list[str]]] = []
        with tarfile.open(path) as tar:
            for member in tar:
                if member.isfile() and member.name.endswith(".json"):
                    index = int(member.name[: -len(".json")].rsplit("-", 1)[1])
                    found.append((index, json.load(tar.extractfile(member))["captions"]))
        per_image += [captions for _, captions in sorted(found)]
    expected = manifest["splits"][split]["images"]
    if len(per_image) != expected:
        raise UserError(
            f"{dataset}/{split}: read {len(per_image)} images' captions, the manifest says {expected}"
        )
    return per_image


def provider_key(provider: str, model: str | None = None) -> str:
    if provider not in PROVIDERS:
        raise UserError(f"bcls.provider={provider!r}; choose one of {', '.join(PROVIDERS)}")
    if provider == "tfidf":
        return "tfidf"
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(str(model)).name or str(model))
    return f"sbert-{slug}"


def cache_path(cache_dir: Path, key: str, manifest_sha: str) -> Path:
    return cache_dir / f"{key}-{manifest_sha[:16]}.pt"


def build_store(
    captions: dict[str, list[list[str]]],
    key: str,
    manifest_sha: str,
    fit_split: str | None,
    provider: str,
    model: str | None = None,
    batch_size: int = 256,
) -> CaptionStore:
    """Vectors for the captions of every split given (tfidf document frequencies from `fit_split`)."""
    flat: list[str] = []
    fit: list[bool] = []
    offsets: dict[str, int] = {}
    image_starts: dict[str, Tensor] = {}
    for split, per_image in captions.items():
        offsets[split] = len(flat)
        counts = torch.tensor([0] + [len(c) for c in per_image], dtype=torch.int64)
        image_starts[split] = counts.cumsum(0)
        for image_captions in per_image:
            flat += image_captions
            fit += [fit_split is None or split == fit_split] * len(image_captions)
    if provider == "tfidf":
        vectors = tfidf_vectors(flat, fit)
    else:
        vectors = sbert_vectors(flat, str(model), batch_size=batch_size)
    return CaptionStore(key, manifest_sha, vectors, offsets, image_starts)


def _save(store: CaptionStore, path: Path) -> None:
    state = {
        "version": STORE_VERSION,
        "key": store.key,
        "manifest_sha256": store.manifest_sha256,
        "offsets": store.offsets,
        "image_starts": store.image_starts,
        **{k: v for k, v in store.vectors.state().items() if v is not None},
    }
    with atomic_open(path, "wb") as handle:
        torch.save(state, handle)


def _load(path: Path, key: str, manifest_sha: str, splits: list[str]) -> CaptionStore | None:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError) as exc:
        log.warning("ignoring unreadable BCLS cache %s (%s)", path, exc)
        return None
    if (
        not isinstance(state, dict)
        or state.get("version") != STORE_VERSION
        or state.get("key") != key
        or state.get("manifest_sha256") != manifest_sha
        or any(s not in state.get("offsets", {}) for s in splits)
    ):
        return None
    vectors = CaptionVectors(dense=state.get("dense"), ids=state.get("ids"), values=state.get("values"))
    return CaptionStore(key, manifest_sha, vectors, dict(state["offsets"]), dict(state["image_starts"]))


def load_caption_store(
    root: str | os.PathLike,
    dataset: str,
    provider: str = "tfidf",
    model: str | None = None,
    fit_split: str | None = "train",
    batch_size: int = 256,
    cache_dir: str | os.PathLike | None = None,
) -> CaptionStore:
    """The cached caption vectors of every split of `dataset` (computed and cached on first use)."""
    key = provider_key(provider, model)
    manifest = read_manifest(root, dataset, verify=False)
    manifest_sha = file_sha256(manifest_path(root, dataset))
    splits = list(manifest["splits"])
    directory = Path(cache_dir) if cache_dir else Path(root) / dataset / "bcls"
    path = cache_path(directory, key, manifest_sha)
    if path.is_file() and (store := _load(path, key, manifest_sha, splits)) is not None:
        return store
    captions = {split: read_captions(root, dataset, manifest, split) for split in splits}
    store = build_store(
        captions, key, manifest_sha, fit_split if fit_split in splits else None, provider, model, batch_size
    )
    try:
        _save(store, path)
        for stale in directory.glob(f"{key}-*.pt"):
            if stale != path:
                stale.unlink(missing_ok=True)
    except OSError as exc:
        log.warning("could not cache BCLS caption vectors at %s (%s); keeping them in memory", path, exc)
    return store


def split_store(root: str | os.PathLike, dataset: str, split: str) -> CaptionStore:
    """tf-idf vectors of one split's captions only, fitted on that split, in memory (for evaluation)."""
    manifest = read_manifest(root, dataset, verify=False, splits=[split])
    captions = {split: read_captions(root, dataset, manifest, split)}
    return build_store(captions, "tfidf", "", split, "tfidf")
