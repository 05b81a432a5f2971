"""Our shards through the real CLIP_benchmark package (`clip-benchmark`, its `wds/` loader and metric).

- its `build_wds_dataset` reads a written split as it is: every image once, every caption, in order;
- its retrieval recall on fixed embeddings equals `xmodal-bench score` on the same embeddings.

The fixed embeddings reach CLIP_benchmark through a stand-in model: the image transform turns each
decoded picture into its image index (looked up by its pixels), and `encode_text` maps the batch's
captions (CLIP_benchmark tokenizes them image by image, in order) to their caption indices.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch

from datamodules import RetrievalDataModule, read_manifest, shard_paths
from datamodules.streams import read_split_ids
from xmodal_bench.cli import main

builder = pytest.importorskip("clip_benchmark.datasets.builder")
zeroshot_retrieval = pytest.importorskip("clip_benchmark.metrics.zeroshot_retrieval")

SPLIT = "test"


def _truth(root, dataset: str, split: str) -> tuple[dict[bytes, int], list[list[str]]]:
    """(pixels -> image index, captions of each image) read through our own DataModule's metadata."""
    import tarfile

    from PIL import Image

    manifest = read_manifest(root, dataset, splits=[split])
    pixels: dict[bytes, int] = {}
    captions: list[list[str]] = []
    for path in shard_paths(root, dataset, manifest, split):
        with tarfile.open(path) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name in sorted(n for n in members if n.endswith(".json")):
            key = name[: -len(".json")]
            image = next(members[f"{key}.{e}"] for e in ("jpg", "png", "webp") if f"{key}.{e}" in members)
            with Image.open(io.BytesIO(image)) as im:
                pixels[im.convert("RGB").tobytes()] = int(key.rsplit("-", 1)[1])
            captions.append(json.loads(members[name])["captions"])
    assert len(pixels) == len(captions), "test images must differ to be told apart by their pixels"
    return pixels, captions


class _FixedModel:
    """A CLIP-like model whose embeddings are fixed tables, indexed by image and caption index."""

    def __init__(self, images: np.ndarray, texts: np.ndarray, captions: list[list[str]]) -> None:
        self.images, self.texts, self.captions = torch.from_numpy(images), torch.from_numpy(texts), captions
        self.offsets = np.cumsum([0] + [len(c) for c in captions])
        self.seen_images: list[int] = []
        self.seen_texts: list[str] = []
        self._batch: list[int] = []
        self._texts: list[str] = []

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        self._texts = list(texts)
        return torch.zeros(len(texts), 1, dtype=torch.long)

    def encode_image(self, batch: torch.Tensor) -> torch.Tensor:
        self._batch = [int(i) for i in batch.view(-1)]
        self.seen_images += self._batch
        return self.images[self._batch]

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        # CLIP_benchmark flattens the batch's caption lists image by image, in order
        expected = [c for i in self._batch for c in self.captions[i]]
        assert self._texts == expected and len(tokens) == len(expected)
        self.seen_texts += self._texts
        rows = [int(self.offsets[i]) + k for i in self._batch for k in range(len(self.captions[i]))]
        return self.texts[rows]


def _clip_benchmark_dataset(root, dataset: str, pixels: dict[bytes, int]):
    def transform(image) -> torch.Tensor:
        return torch.tensor([pixels[image.convert("RGB").tobytes()]])

    return builder.build_wds_dataset(dataset, transform=transform, split=SPLIT, data_dir=str(root / dataset))


def test_writer_lays_out_clip_benchmark_files(synth_root) -> None:
    manifest = read_manifest(synth_root, "synth")
    base = synth_root / "synth"
    assert (base / "dataset_type.txt").read_text().strip() == "retrieval"
    for split, info in manifest["splits"].items():
        assert int((base / split / "nshards.txt").read_text()) == len(info["shards"])
        assert [s["name"] for s in info["shards"]] == [f"{k}.tar" for k in range(len(info["shards"]))]


@pytest.mark.parametrize("workers", [0, 2])
def test_clip_benchmark_reads_every_image_once_and_every_caption(synth_root, workers) -> None:
    pixels, captions = _truth(synth_root, "synth", SPLIT)
    n_shards = int((synth_root / "synth" / SPLIT / "nshards.txt").read_text())
    assert workers <= n_shards  # CLIP_benchmark's limit: at most one worker per shard
    ds = _clip_benchmark_dataset(synth_root, "synth", pixels)
    seen: list[int] = []
    texts: dict[int, list[str]] = {}
    loader = torch.utils.data.DataLoader(ds.batched(5), batch_size=None, num_workers=workers)
    for images, caption_lists in loader:
        for index, caps in zip(images.view(-1).tolist(), caption_lists, strict=True):
            seen.append(index)
            texts[index] = list(caps)
    assert sorted(seen) == list(range(len(captions)))  # every image, once
    assert [texts[i] for i in range(len(captions))] == captions  # every caption, as we wrote it
    if workers == 0:
        assert seen == list(range(len(captions)))  # one reader: our image order


def test_clip_benchmark_recall_equals_xmodal_bench_score(synth_root, tmp_path, capsys) -> None:
    pixels, captions = _truth(synth_root, "synth", SPLIT)
    owner = np.repeat(np.arange(len(captions)), [len(c) for c in captions])
    rng = np.random.default_rng(0)
    dim = 16
    images = rng.normal(size=(len(captions), dim)).astype(np.float32)
    texts = (images[owner] + 1.6 * rng.normal(size=(len(owner), dim))).astype(
        np.float32
    )  # noisy: mid recalls

    model = _FixedModel(images, texts, captions)
    ds = _clip_benchmark_dataset(synth_root, "synth", pixels)
    loader = torch.utils.data.DataLoader(ds.batched(7), batch_size=None, num_workers=0)
    theirs = zeroshot_retrieval.evaluate(
        model, loader, model.tokenize, "cpu", amp=False, recall_k_list=[1, 5, 10]
    )
    assert sorted(model.seen_images) == list(range(len(captions)))
    assert len(model.seen_texts) == len(owner)

    for name, array in {"img": images, "txt": texts, "owner": owner.astype(np.int64)}.items():
        np.save(tmp_path / f"{name}.npy", array)
    argv = ["score", "--image-embeddings", str(tmp_path / "img.npy"), "--text-embeddings"]
    argv += [
        str(tmp_path / "txt.npy"),
        "--protocol",
        "caption",
        "--text-to-image",
        str(tmp_path / "owner.npy"),
    ]
    capsys.readouterr()
    assert main(argv) == 0
    ours = json.loads(capsys.readouterr().out)
    for k in (1, 5, 10):
        assert ours[f"t2i_r{k}"] == pytest.approx(100 * theirs[f"image_retrieval_recall@{k}"], abs=1e-4)
        assert ours[f"i2t_r{k}"] == pytest.approx(100 * theirs[f"text_retrieval_recall@{k}"], abs=1e-4)
    assert 0 < ours["t2i_r1"] < 100 and 0 < ours["i2t_r1"] < 100  # a real test, not all hits or misses


def test_split_ids_follow_the_evaluation_order(synth_root, tokenizer) -> None:
    dm = RetrievalDataModule(synth_root, "synth", tokenizer, batch_size=8, workers=0)
    dm.setup("test")
    image_ids, caption_ids = dm.split_ids(SPLIT)
    _, captions = _truth(synth_root, "synth", SPLIT)
    assert image_ids.dtype.kind == "U" and len(image_ids) == len(captions) == len(set(image_ids))
    assert list(caption_ids) == [f"{image_ids[i]}#{k}" for i, c in enumerate(captions) for k in range(len(c))]
    shards = dm._shards(SPLIT)
    assert read_split_ids(shards) == (list(image_ids), list(caption_ids))
