"""`xmodal-bench index build|search`: put a trained checkpoint to work as a search engine.

    xmodal-bench index build --checkpoint runs/synth/aladin/RUN/checkpoints/best.ckpt \\
        --data synth --split test --out my_index [--backend faiss-hnsw]
    xmodal-bench index search my_index --text "a red circle at the top" --k 5
    xmodal-bench index search my_index --image photo.jpg

`build` re-creates the method from the checkpoint (its hyperparameters hold the resolved run
config; the weights come from its state dict, so nothing is downloaded), encodes every image and
every caption of the split with the method's retrieval embedding (`global`: ALADIN's matching
head, CLIP's projected embedding, ...) and writes to OUT:
- `images/`: the image gallery index (answers text queries), ids = the dataset's image ids;
- `texts/`: the caption gallery index (answers image queries), ids = caption indices;
- `meta.json`: checkpoint, method, dataset, split, the run config, and per item the image id /
  caption text, so that `search` can print readable results.
`search` encodes the query with the same checkpoint and prints the top k with scores, image ids
and captions (`--json` for machine-readable output).
"""

from __future__ import annotations

import argparse
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from xmodal_bench.argtypes import non_negative_int, positive_int
from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.errors import UserError
from xmodal_bench.retrieval.index import BACKENDS, IndexConfig, as_index_config, build_index, load_index

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
    """The LightningModule saved in a checkpoint, in eval mode on `device`, and its run config."""
    from xmodal_bench.registry import create_method

    path = Path(checkpoint)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # a corrupt or foreign file is a user error
        raise UserError(f"cannot read checkpoint {path}: {exc}") from exc
    config = (state.get("hyper_parameters") or {}).get("config") if isinstance(state, dict) else None
    if not isinstance(config, dict) or "state_dict" not in state:
        raise UserError(f"{path} is not an xmodal-bench checkpoint (no saved run config / state dict)")
    cfg = OmegaConf.create(config)
    cfg.backbone.pretrained = None  # the weights come from the checkpoint, not from a download
    method = create_method(cfg)
    missing, unexpected = method.load_state_dict(state["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"{path} does not fit method {cfg.method!r}: "
            f"{len(missing)} missing and {len(unexpected)} unexpected weights (e.g. {(missing or unexpected)[0]})"
        )
    return method.eval().to(device), cfg


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
    _ensure_dataset(cfg, root, dataset)
    image_ids, captions = split_items(root, dataset, args.split)
    images, texts = encode_split(method, cfg, root, dataset, args.split, args.batch_size)
    if images.shape[0] != len(image_ids) or texts.shape[0] != len(captions):
        raise UserError(
            f"{dataset}/{args.split}: encoded items do not match the shards; re-create the dataset"
        )
    config = as_index_config(_method_index_config(cfg), **_index_overrides(args))
    out = Path(args.out)
    image_index = build_index(images, ids=image_ids, config=config)
    text_index = build_index(texts, ids=list(range(len(captions))), config=config)
    image_index.save(out / "images")
    text_index.save(out / "texts")
    atomic_write_json(
        out / META_FILE,
        {
            "format": META_FORMAT,
            "checkpoint": str(Path(args.checkpoint).resolve()),
            "method": str(cfg.method),
            "dataset": dataset,
            "split": args.split,
            "backend": image_index.backend,
            "images": image_ids,
            "captions": captions,
            "config": OmegaConf.to_container(cfg, resolve=True),
        },
    )
    print(
        f"indexed {len(image_ids)} images and {len(captions)} captions of {dataset}/{args.split} "
        f"with {cfg.method} ({image_index.describe()}) in {time.perf_counter() - started:.1f} s -> {out}"
    )
    return 0


def _ensure_dataset(cfg: DictConfig, root: str, dataset: str) -> None:
    """Built-in synthetic sets are generated on demand (with the run's parameters for its own set)."""
    from datamodules import ensure_synthetic
    from datamodules.manifest import SYNTHETIC_NAMES

    if dataset in SYNTHETIC_NAMES:
        params = dict(cfg.data.synthetic) if dataset == cfg.data.name else {}
        ensure_synthetic(root, dataset, **params)


# --------------------------------------------------------------------------------------------- search


def read_meta(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / META_FILE
    if not path.is_file():
        raise UserError(
            f"no index at {folder} (missing {META_FILE}); create one with `xmodal-bench index build`"
        )
    meta = json.loads(path.read_text())
    if meta.get("format") != META_FORMAT:
        raise UserError(f"{path}: format {meta.get('format')!r}, expected {META_FORMAT}; rebuild the index")
    return meta


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
    pixels = eval_transform(tuple(cfg.data.image_size))(picture).as_subclass(torch.Tensor)
    return method.image_features(pixels[None].to(method.device))["global"].float()


@torch.no_grad()
def search(args: argparse.Namespace) -> int:
    meta = read_meta(args.index)
    folder = Path(args.index)
    method, cfg = load_method(args.checkpoint or meta["checkpoint"], _device(args.device))
    query = _encode_query(method, cfg, args.text, args.image)
    gallery = "images" if args.text is not None else "texts"
    index = load_index(folder / gallery, **({"nprobe": args.nprobe, "ef_search": args.ef_search}))
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


# --------------------------------------------------------------------------------------------- parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`index build` and `index search` subcommands (parser: the `index` command's parser)."""
    commands = parser.add_subparsers(dest="index_command", required=True, parser_class=type(parser))
    p = commands.add_parser("build", help="encode a dataset split with a checkpoint and write a search index")
    p.add_argument(
        "--checkpoint", required=True, help="a Lightning checkpoint written by `xmodal-bench bench`"
    )
    p.add_argument(
        "--data", default=None, help="dataset name (default: the one the checkpoint was trained on)"
    )
    p.add_argument("--data-root", default=None, help="folder holding converted datasets (default: the run's)")
    p.add_argument("--split", default="test", help="split to index (default: test)")
    p.add_argument("--out", required=True, help="folder to write the index to")
    p.add_argument("--backend", choices=BACKENDS, default=None, help="index backend (default: the method's)")
    p.add_argument("--nlist", type=non_negative_int, default=None, help="faiss-ivf cells (0 = 4 sqrt(N))")
    p.add_argument("--nprobe", type=positive_int, default=None, help="faiss-ivf cells scanned per query")
    p.add_argument("--hnsw-m", type=positive_int, default=None, help="faiss-hnsw links per node")
    p.add_argument(
        "--ef-construction", type=positive_int, default=None, help="faiss-hnsw build candidate list"
    )
    p.add_argument("--ef-search", type=positive_int, default=None, help="faiss-hnsw search candidate list")
    p.add_argument(
        "--index-device", choices=["auto", "cpu", "cuda"], default=None, help="where the index runs"
    )
    p.add_argument("--batch-size", type=positive_int, default=256, help="encoding batch size")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    p.set_defaults(index_func=build)

    p = commands.add_parser("search", help="answer a text or image query from an index")
    p.add_argument("index", help="a folder written by `xmodal-bench index build`")
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", default=None, help="find the images that match this caption")
    query.add_argument("--image", default=None, help="find the captions that match this image file")
    p.add_argument("--k", type=positive_int, default=5, help="number of results (default: 5)")
    p.add_argument("--nprobe", type=positive_int, default=None, help="override faiss-ivf nprobe")
    p.add_argument("--ef-search", type=positive_int, default=None, help="override faiss-hnsw efSearch")
    p.add_argument("--checkpoint", default=None, help="model to encode the query (default: the one indexed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="where the model runs")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(index_func=search)


def run(args: argparse.Namespace) -> int:
    return int(args.index_func(args))
