"""Shared pytest fixtures: tiny synthetic datasets and the test tokenizer.

Fixtures (session-scoped, generated once per test process into a temporary folder):

- `synth_root` -> pathlib.Path: a data root holding two tiny datasets in the real shard format,
  each split cut into several shards so rank/worker splitting is exercised:
    * `synth` (caption protocol, 5 captions/image, 64x64 JPEG):
      train 64 / val 32 / test 48 images, 8 images per shard (8 / 4 / 6 shards);
    * `synth_reid` (person protocol, 2 captions/image, 96x32 JPEG):
      train 12 ids x 3 images (pids 0..11) / val 4 ids / test 6 ids, 8 images per shard.
  Use it as `RetrievalDataModule(synth_root, "synth", tokenizer, ...)`. Treat it as read-only
  (it is shared by every test of the session); copy it (`shutil.copytree`) before modifying.
- `synth_params` -> {"synth": {...}, "synth_reid": {...}}: the generation parameters of those two
  sets, e.g. to re-create one elsewhere: `generate_synthetic(name, root, **synth_params[name])`.
- `tokenizer`: `open_clip.get_tokenizer("ViT-B-32", context_length=32)` (picklable; pad id 0).
"""

from __future__ import annotations

import pytest

TINY_SYNTH = {"train_images": 64, "val_images": 32, "test_images": 48, "shard_images": 8}
TINY_SYNTH_REID = {"train_ids": 12, "val_ids": 4, "test_ids": 6, "images_per_id": 3, "shard_images": 8}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory):
    """Data root with tiny `synth` and `synth_reid` datasets (see module docstring)."""
    from datamodules.synthetic_sets import generate_synthetic

    root = tmp_path_factory.mktemp("data")
    generate_synthetic("synth", root, progress=False, **TINY_SYNTH)
    generate_synthetic("synth_reid", root, progress=False, **TINY_SYNTH_REID)
    return root


@pytest.fixture(scope="session")
def tokenizer():
    """open_clip's ViT-B-32 tokenizer with context length 32 (matches the tiny test backbones)."""
    import open_clip

    return open_clip.get_tokenizer("ViT-B-32", context_length=32)


@pytest.fixture(scope="session")
def synth_params() -> dict[str, dict[str, int]]:
    """Generation parameters of the datasets in `synth_root`, by dataset name."""
    return {"synth": dict(TINY_SYNTH), "synth_reid": dict(TINY_SYNTH_REID)}
