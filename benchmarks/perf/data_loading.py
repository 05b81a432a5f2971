"""Data loading: decoded images/s of one worker from shards vs the same JPEGs in a folder.

    .venv/bin/python benchmarks/perf/data_loading.py            # 224 square and 384x128, 600 images
    .venv/bin/python benchmarks/perf/data_loading.py --quick    # seconds

Writes the same JPEG bytes twice: as one file per image in a folder, and through `DatasetWriter`
as shards. Then reads every image once, decoded, resized (bicubic, antialiased) and normalised
into batches of 64, in one process with one torch thread, as in a DataLoader worker (PyTorch sets
its workers to one thread; with W workers on W free cores multiply by about W):
- `folder`: a map-style dataset that opens each file with PIL (torchvision ImageFolder's way),
  same resize and normalisation as ours, default collation;
- `shards`: our eval image loader (`RetrievalDataModule.eval_dataloaders`, workers=0);
- `shards + draft`: the same shard bytes decoded with PIL's JPEG draft mode (DCT-domain
  downscaling to the smallest size >= the target before the bicubic resize); not what the data
  layer does today, measured to show where the remaining time goes;
- `shards, --shorter-side N`: the shards `xmodal-bench data convert --shorter-side N` writes, N the
  larger target side (images stored at training resolution, JPEG quality 95), read by our loader;
  only where that downscales (not for the person crops, which are upscaled in training).
Profiles: `coco` (640x480 sources -> 224x224) and `person` (96x256 crops -> 384x128). All files
are in the page cache (just written): this is the CPU cost per image, not the disk's. The image
content is smooth shapes with mild noise, compressing like photos (about 40-60 KB at 640x480).
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from _common import emit, emit_summary, machine, provenance_notes, timed, write_markdown
from PIL import Image

from datamodules import DatasetWriter, RetrievalDataModule
from datamodules.converters.images import ImagePayload, shrink_image
from datamodules.transforms import normalize_transform, resize_transform

PROFILES = {"coco": ((480, 640), (224, 224)), "person": ((256, 96), (384, 128))}  # source hw, target hw


def make_jpeg(rng: np.random.Generator, hw: tuple[int, int]) -> bytes:
    h, w = hw
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.stack(
        [(x / w) * rng.uniform(50, 255), (y / h) * rng.uniform(50, 255), np.full_like(x, 128.0)], -1
    )
    for _ in range(6):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.3) * min(h, w)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    image += rng.normal(0, 6, image.shape)
    buffer = io.BytesIO()
    Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


class FolderImages(torch.utils.data.Dataset):
    """One JPEG file per item, decoded with PIL: the usual image-folder dataset."""

    def __init__(self, files: list[Path], size: tuple[int, int]) -> None:
        self.files, self.resize, self.normalize = files, resize_transform(size), normalize_transform()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.files[i]) as im:
            return self.normalize(self.resize(im.convert("RGB")).as_subclass(torch.Tensor))


class DraftShardImages(torch.utils.data.IterableDataset):
    """The shard bytes, decoded in JPEG draft mode (reduced-size DCT decoding) before the resize."""

    def __init__(self, shards: list[Path], size: tuple[int, int]) -> None:
        self.shards, self.size = shards, size
        self.resize, self.normalize = resize_transform(size), normalize_transform()

    def __iter__(self):
        import webdataset as wds

        batch = []
        for sample in wds.WebDataset(
            [str(s) for s in self.shards], shardshuffle=False, nodesplitter=None, workersplitter=None
        ):
            with Image.open(io.BytesIO(sample["jpg"])) as im:
                im.draft("RGB", (self.size[1], self.size[0]))  # (width, height): stays >= the target
                batch.append(self.resize(im.convert("RGB")).as_subclass(torch.Tensor))
            if len(batch) == 64:
                yield self.normalize(torch.stack(batch))
                batch = []
        if batch:
            yield self.normalize(torch.stack(batch))


def shard_loader(
    root: Path, name: str, blobs: list[bytes], target_hw: tuple[int, int]
) -> RetrievalDataModule:
    """Write `blobs` as the test split of dataset `name` under `root`; our eval loader over it."""
    import open_clip

    with DatasetWriter(root, name, protocol="caption", max_images_per_shard=256) as writer:
        for i, blob in enumerate(blobs):
            writer.add("test", blob, "jpg", f"img{i}", [f"a picture number {i}"])
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=32)
    dm = RetrievalDataModule(
        root, name, tokenizer, eval_batch_size=64, workers=0, image_size=target_hw,
        train_split=None, val_split=None, test_split="test",
    )  # fmt: skip
    dm.setup("test")
    return dm


def count_images(loader) -> int:
    total = 0
    for batch in loader:
        total += int(batch["valid"].sum()) if isinstance(batch, dict) else batch.shape[0]  # minus padding
    return total


def measure(profile: str, images: int, work: Path, repeats: int) -> list[dict]:
    source_hw, target_hw = PROFILES[profile]
    rng = np.random.default_rng(0)
    blobs = [make_jpeg(rng, source_hw) for _ in range(images)]
    folder = work / f"folder-{profile}"
    folder.mkdir()
    files = []
    for i, blob in enumerate(blobs):
        files.append(folder / f"{i:06d}.jpg")
        files[-1].write_bytes(blob)
    shorter_side = max(target_hw)
    small = [shrink_image(ImagePayload(blob, "jpg"), shorter_side).data for blob in blobs]
    root = work / "shards"
    shard_sets = (
        {profile: blobs, f"{profile}-small": small} if min(source_hw) > shorter_side else {profile: blobs}
    )
    modules = {name: shard_loader(root, name, data, target_hw) for name, data in shard_sets.items()}
    shard_files = sorted((root / profile / "test").glob("*.tar"))
    loaders = {
        "folder": lambda: torch.utils.data.DataLoader(FolderImages(files, target_hw), batch_size=64),
        "shards": lambda: modules[profile].eval_dataloaders("test")[0],
        "shards + draft": lambda: torch.utils.data.DataLoader(
            DraftShardImages(shard_files, target_hw), batch_size=None
        ),
    }
    kilobytes = dict.fromkeys(loaders, sum(map(len, blobs)) / len(blobs) / 1024)
    if f"{profile}-small" in modules:
        name = f"shards, --shorter-side {shorter_side}"
        loaders[name] = lambda: modules[f"{profile}-small"].eval_dataloaders("test")[0]
        kilobytes[name] = sum(map(len, small)) / len(small) / 1024
    best = {name: (float("inf"), float("inf")) for name in loaders}
    for _ in range(repeats):  # interleaved, so every reader sees the same load
        for name, make in loaders.items():
            wall, cpu, n = timed(lambda make=make: count_images(make()))
            assert n == images, (name, n)
            best[name] = min(best[name], (wall, cpu))
    folder_rate = images / best["folder"][0]
    records = []
    for name, (wall, cpu) in best.items():
        records.append(
            emit(
                {
                    "case": f"data/{profile}/{name}",
                    "source": f"{source_hw[1]}x{source_hw[0]}",
                    "target": f"{target_hw[0]}x{target_hw[1]}",
                    "images": images,
                    "jpeg_kb": round(kilobytes[name], 1),
                    "seconds": round(wall, 3),
                    "images_per_s": round(images / wall, 1),
                    "images_per_cpu_s": round(images / cpu, 1),
                    "x_folder": round(images / wall / folder_rate, 2),
                }
            )
        )
    return records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a few images (smoke test)")
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--profiles", nargs="+", choices=sorted(PROFILES), default=["coco", "person"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a DataLoader worker has 1)")
    parser.add_argument("--out", default="data_loading")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    images, repeats = (8, 1) if args.quick else (args.images, args.repeats)
    if args.quick:
        args.profiles = args.profiles[:1]
    info = machine()
    with tempfile.TemporaryDirectory() as tmp:
        records = [r for p in args.profiles for r in measure(p, images, Path(tmp), repeats)]
    info_end = machine()
    rows = [
        [
            r["case"].split("/", 1)[1],
            f"{r['source']} -> {r['target']}",
            f"{r['jpeg_kb']} KB",
            f"{r['images_per_s']:,}",
            f"{r['images_per_cpu_s']:,}",
            f"{r['x_folder']}x",
        ]
        for r in records
    ]
    path = write_markdown(
        args.out,
        "Data loading: decoded images/s of one worker (decode + resize + normalise, batches of 64)",
        ["reader", "source -> target", "JPEG size", "images/s", "images per CPU-second", "vs folder"],
        rows,
        [
            *provenance_notes("data_loading.py", argv, info, info_end),
            f"{images} images per profile, files in the page cache; best of {repeats} interleaved runs.",
        ],
    )
    emit_summary("data/summary", path, info, info_end)
    return 0


if __name__ == "__main__":
    sys.exit(main())
