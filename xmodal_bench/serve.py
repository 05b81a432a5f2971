"""Put a trained checkpoint to work as a search engine (`xmodal-bench index build|search`).

    xmodal-bench index build --checkpoint runs/synth/aladin/RUN/checkpoints/best.ckpt \\
        --data synth --split test --out my_index [--backend faiss-hnsw]
    xmodal-bench index search my_index --text "a red circle at the top" --k 5
    xmodal-bench index search my_index --image photo.jpg

`build_index_folder` re-creates the method from the checkpoint (read safely: `weights_only=True`;
its hyperparameters hold the resolved run config and its state dict every weight, so nothing is
downloaded), encodes every image and every caption of the split with the method's retrieval
embedding (`global`: ALADIN's matching head, CLIP's projected embedding, ...) and writes OUT:
- `images/`: the image gallery index (answers text queries), ids = the dataset's image ids;
- `texts/`: the caption gallery index (answers image queries), ids = caption indices;
- `meta.json`: checkpoint, method, dataset, split, the run config, and per item the image id /
  caption text, so that `search` can print readable results.
The folder is written under a temporary name beside OUT and renamed into place at the end, so a
failed build leaves an earlier index at OUT untouched. `search_index_folder` checks what it
reads (`meta.json` fields, each gallery's row count and dimension against it) and encodes the
query with the same checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.errors import UserError
from xmodal_bench.retrieval.index import IndexConfig, as_index_config, build_index, load_index

META_FILE = "meta.json"
META_FORMAT = 1


# --------------------------------------------------------------------------------------------- checkpoints


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    return torch.device(name)


def load_method(checkpoint: str | Path, device: torch.device) -> tuple[Any, DictConfig]:
    """The method saved in a checkpoint (read safely, weights loaded strictly), in eval mode on `device`."""
    from xmodal_bench.run.checkpoints import checkpoint_config, read_checkpoint, restore_method

    state = read_checkpoint(checkpoint)
    cfg = checkpoint_config(state, checkpoint)
    return restore_method(state, cfg, checkpoint).eval().to(device), cfg


# --------------------------------------------------------------------------------------------- dataset


def split_items(root: str | Path, dataset: str, split: str) -> tuple[list[str], list[dict[str, Any]]]:
    """(image ids by image index, captions by caption index as {"text", "image"}) of a split.

    Read from the shards' `json` members in manifest order: the same order (and so the same
    indices) as the evaluation streams.
    """
    from datamodules import read_manifest, shard_paths

    manifest = read_manifest(root, dataset, verify=False, splits=[split])
    images: list[str] = []
    captions: list[dict[str, Any]] = []
    for path in shard_paths(root, dataset, manifest, split):
        with tarfile.open(path) as tar:
            for member in tar:
                if not member.name.endswith(".json"):
                    continue
                handle = tar.extractfile(member)
                meta = json.loads(handle.read()) if handle is not None else {}
                image = len(images)
                images.append(str(meta.get("image_id", image)))
                captions += [{"text": text, "image": image} for text in meta.get("captions", [])]
    return images, captions


@torch.no_grad()
def encode_split(
    method: Any, cfg: DictConfig, root: str, dataset: str, split: str, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`global` embeddings of every image and every caption of a split, in index order."""
    from datamodules import RetrievalDataModule

    datamodule = RetrievalDataModule(
        root,
        dataset,
        tokenizer=method.backbone.tokenizer(),
        batch_size=batch_size,
        workers=0,
        image_size=tuple(cfg.data.image_size),
        interpolation=cfg.data.interpolation,
        train_split=None,
        val_split=None,
        test_split=split,
        pin_memory=False,
    )
    datamodule.setup("test")
    image_loader, text_loader = datamodule.eval_dataloaders(split)
    out = []
    for loader, key, encode, index_key in (
        (image_loader, "image", method.image_features, "image_index"),
        (text_loader, "text", method.text_features, "caption_index"),
    ):
        rows, feats = [], []
        for batch in loader:
            valid = batch["valid"]
            feats.append(encode(batch[key].to(method.device))["global"].float().cpu()[valid])
            rows.append(batch[index_key][valid])
        order = torch.cat(rows).argsort()
        out.append(torch.cat(feats)[order])
    return out[0], out[1]


# --------------------------------------------------------------------------------------------- build


def _index_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "backend": args.backend,
        "device": args.index_device,
        "nlist": args.nlist,
        "nprobe": args.nprobe,
        "hnsw_m": args.hnsw_m,
        "ef_construction": args.ef_construction,
        "ef_search": args.ef_search,
    }


def _method_index_config(cfg: DictConfig) -> IndexConfig:
    """The `index:` section of the method's config when it has one (ALADIN), else the defaults."""
    section = cfg.get(str(cfg.method).split("+")[0])
    node = section.get("index") if isinstance(section, DictConfig) else None
    return as_index_config(node) if node is not None else IndexConfig()


def build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    device = _device(args.device)
    method, cfg = load_method(args.checkpoint, device)
    dataset = args.data or str(cfg.data.name)
    root = args.data_root or str(cfg.data.root)
    out = Path(args.out)
    if out.exists() and not (out / META_FILE).is_file():
        raise UserError(f"--out {out} exists and is not a search index; choose another folder")
    _ensure_dataset(cfg, root, dataset)
    image_ids, captions = split_items(root, dataset, args.split)
    images, texts = encode_split(method, cfg, root, dataset, args.split, args.batch_size)
    if images.shape[0] != len(image_ids) or texts.shape[0] != len(captions):
        raise UserError(
            f"{dataset}/{args.split}: encoded items do not match the shards; re-create the dataset"
        )
    config = as_index_config(_method_index_config(cfg), **_index_overrides(args))
    image_index = build_index(images, ids=image_ids, config=config)
    text_index = build_index(texts, ids=list(range(len(captions))), config=config)
    meta = {
        "format": META_FORMAT,
        "checkpoint": str(Path(args.checkpoint).resolve()),
        "method": str(cfg.method),
        "dataset": dataset,
        "split": args.split,
        "backend": image_index.backend,
        "dim": int(images.shape[1]),
        "images": image_ids,
        "captions": captions,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    with staged_folder(out) as staging:
        image_index.save(staging / "images")
        text_index.save(staging / "texts")
        atomic_write_json(staging / META_FILE, meta)
    print(
        f"indexed {len(image_ids)} images and {len(captions)} captions of {dataset}/{args.split} "
        f"with {cfg.method} ({image_index.describe()}) in {time.perf_counter() - started:.1f} s -> {out}"
    )
    return 0


@contextlib.contextmanager
def staged_folder(out: Path) -> Iterator[Path]:
    """A temporary folder beside `out` that replaces it (whole) when the block succeeds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".building", dir=out.parent))
    try:
        yield staging
        retired = out.parent / f".{out.name}.replaced"
        shutil.rmtree(retired, ignore_errors=True)
        if out.exists():
            os.replace(out, retired)
        os.replace(staging, out)
        shutil.rmtree(retired, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _ensure_dataset(cfg: DictConfig, root: str, dataset: str) -> None:
    """Built-in synthetic sets are generated on demand (with the run's parameters for its own set)."""
    from datamodules import ensure_synthetic
    from datamodules.manifest import SYNTHETIC_NAMES

    if dataset in SYNTHETIC_NAMES:
        params = dict(cfg.data.synthetic) if dataset == cfg.data.name else {}
        ensure_synthetic(root, dataset, **params)


# --------------------------------------------------------------------------------------------- search


_META_FIELDS = {
    "checkpoint": str,
    "method": str,
    "dataset": str,
    "split": str,
    "images": list,
    "captions": list,
    "config": dict,
}


def read_meta(folder: str | Path) -> dict[str, Any]:
    """The index folder's `meta.json`, checked field by field (one line naming what is wrong)."""
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise UserError(
            f"no index at {folder} (missing {META_FILE}); create one with `xmodal-bench index build`"
        )
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc}); rebuild the index") from None
    if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise UserError(f"{path}: format {found!r}, expected {META_FORMAT}; rebuild the index")
    for key, kind in _META_FIELDS.items():
        if not isinstance(meta.get(key), kind):
            raise UserError(f"{path}: field {key!r} is missing or not a {kind.__name__}; rebuild the index")
    captions = meta["captions"]
    images = len(meta["images"])
    if not all(
        isinstance(c, dict)
        and isinstance(c.get("text"), str)
        and isinstance(c.get("image"), int)
        and 0 <= c["image"] < images
        for c in captions
    ):
        raise UserError(
            f"{path}: a caption entry is malformed or names an image outside the index; rebuild it"
        )
    return meta


def _load_gallery(folder: Path, gallery: str, rows: int, **overrides: Any) -> Any:
    """One gallery index of the folder, checked against `meta.json` (rows), else one UserError."""
    try:
        index = load_index(folder / gallery, **overrides)
    except UserError as exc:
        raise UserError(f"{folder}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise UserError(f"{folder / gallery}: damaged index ({type(exc).__name__}); rebuild it") from None
    if index.ntotal != rows or len(index.ids) != rows:
        raise UserError(
            f"{folder / gallery}: holds {index.ntotal} rows but {META_FILE} lists {rows}; rebuild the index"
        )
    return index


def _encode_query(method: Any, cfg: DictConfig, text: str | None, image: str | None) -> torch.Tensor:
    if text is not None:
        if not text.strip():
            raise UserError("--text is empty")
        ids = method.backbone.tokenizer()([text]).to(method.device)
        return method.text_features(ids)["global"].float()
    from PIL import Image, UnidentifiedImageError

    from datamodules import eval_transform

    path = Path(image)
    if not path.is_file():
        raise UserError(f"image not found: {path}")
    try:
        with Image.open(path) as opened:
            picture = opened.convert("RGB")
    except (UnidentifiedImageError, OSError) as exc:
        raise UserError(f"cannot read image {path}: {exc}") from exc
    pixels = eval_transform(tuple(cfg.data.image_size), cfg.data.interpolation)(picture).as_subclass(
        torch.Tensor
    )
    return method.image_features(pixels[None].to(method.device))["global"].float()


@torch.no_grad()
def search(args: argparse.Namespace) -> int:
    meta = read_meta(args.index)
    folder = Path(args.index)
    gallery = "images" if args.text is not None else "texts"
    rows_expected = len(meta["images"]) if gallery == "images" else len(meta["captions"])
    index = _load_gallery(folder, gallery, rows_expected, nprobe=args.nprobe, ef_search=args.ef_search)
    method, cfg = load_method(args.checkpoint or meta["checkpoint"], _device(args.device))
    query = _encode_query(method, cfg, args.text, args.image)
    if query.shape[1] != index.dim:
        raise UserError(
            f"{folder}: the index holds {index.dim}-dimensional vectors but the model encodes "
            f"{query.shape[1]}; index and checkpoint do not belong together"
        )
    scores, rows = index.search(query.cpu(), args.k)
    results = []
    for rank, (score, row) in enumerate(zip(scores[0].tolist(), rows[0].tolist(), strict=True), start=1):
        if gallery == "images":
            image = row
            caption = next((c["text"] for c in meta["captions"] if c["image"] == row), "")
        else:
            image, caption = meta["captions"][row]["image"], meta["captions"][row]["text"]
        results.append(
            {
                "rank": rank,
                "score": score,
                "image_index": image,
                "image_id": meta["images"][image],
                "caption": caption,
            }
        )
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    what = f'text "{args.text}"' if args.text is not None else f"image {args.image}"
    print(f"top {len(results)} {gallery} for {what} ({meta['method']}, {meta['dataset']}/{meta['split']}):")
    for r in results:
        label = f"image {r['image_id']}"
        print(f"  {r['rank']:>3}. {r['score']:.4f}  {label:<20} {r['caption']}")
    return 0
