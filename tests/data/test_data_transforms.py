"""Transforms: CLIP constants, exact resize, batch normalisation, IRRA augmentation, picklability."""

from __future__ import annotations

import pickle

import pytest
import torch
from PIL import Image

from datamodules import transforms as T


def _image() -> Image.Image:
    return Image.frombytes("RGB", (40, 30), bytes(range(256)) * 14 + bytes(40 * 30 * 3 - 256 * 14))


def test_constants_are_open_clips():
    import open_clip.constants as c

    assert tuple(c.OPENAI_DATASET_MEAN) == T.OPENAI_DATASET_MEAN
    assert tuple(c.OPENAI_DATASET_STD) == T.OPENAI_DATASET_STD


@pytest.mark.parametrize(("size", "hw"), [(24, (24, 24)), ((48, 16), (48, 16))])
def test_eval_transform_resizes_exactly_and_normalises(size, hw):
    out = T.eval_transform(size)(_image())
    assert out.shape == (3, *hw) and out.dtype == torch.float32
    resized = T.resize_transform(size)(_image())
    assert resized.dtype == torch.uint8 and resized.shape == (3, *hw)
    mean = torch.tensor(T.OPENAI_DATASET_MEAN).view(3, 1, 1)
    std = torch.tensor(T.OPENAI_DATASET_STD).view(3, 1, 1)
    torch.testing.assert_close(out, (resized.float() / 255 - mean) / std)


def test_normalize_works_on_batches():
    batch = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    together = T.normalize_transform()(batch)
    apart = torch.stack([T.normalize_transform()(x) for x in batch])
    torch.testing.assert_close(together, apart)


def test_train_none_is_deterministic_and_irra_is_random():
    resized = T.resize_transform((48, 16))(_image())
    none = T.train_transform((48, 16), "none")
    torch.testing.assert_close(none(resized), none(resized))
    irra = T.train_transform((48, 16), "irra")
    torch.manual_seed(0)
    outs = [irra(resized) for _ in range(4)]
    assert all(o.shape == (3, 48, 16) for o in outs)
    assert any(not torch.equal(outs[0], o) for o in outs[1:])
    assert T.augment_transform(16, "none") is None and T.erase_transform("none") is None
    with pytest.raises(ValueError, match="unknown augment"):
        T.train_transform(16, "autoaugment")


def test_transforms_pickle():
    for t in (T.eval_transform(32), T.train_transform((48, 16), "irra"), T.resize_transform(8)):
        clone = pickle.loads(pickle.dumps(t))
        assert type(clone) is type(t)


def test_to_hw():
    assert T.to_hw(5) == (5, 5) and T.to_hw([384, 128]) == (384, 128)
    with pytest.raises(ValueError):
        T.to_hw((1, 2, 3))
