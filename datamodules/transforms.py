"""Image transforms: CLIP normalisation, per-dataset resize, optional IRRA train augmentation.

All transforms are torchvision v2 `Compose`s (picklable, so they travel to DataLoader workers).
The train pipeline is split in two so the data stream can decode + resize an image ONCE and then
augment it independently for each of its captions:

    prepare = resize_transform(size)          # PIL -> uint8 tensor [3, H, W], deterministic
    finish  = train_transform(size, augment)  # uint8 [3, H, W] -> float32, random per call

and `train_transform` itself is `augment_transform` (random flip/crop on uint8, per caption) +
`normalize_transform` (works on one image or a batch) + `erase_transform` (per caption, after
normalising), so a stream can normalise whole batches at once.

`eval_transform(size)` is resize + normalise in one callable (PIL -> float32 [3, H, W]).

Resize policy: the image is resized to exactly (H, W) (no crop, aspect not kept, as IRRA does
for person sets; a crop could cut away what a caption describes) with antialias, by `bicubic`
interpolation (CLIP's own preprocessing) unless the run asks for `bilinear` (IRRA's released
transforms: torchvision's default). `data.interpolation` chooses.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.transforms import v2

__all__ = [
    "AUGMENTATIONS",
    "INTERPOLATIONS",
    "OPENAI_DATASET_MEAN",
    "OPENAI_DATASET_STD",
    "augment_transform",
    "erase_transform",
    "eval_transform",
    "normalize_transform",
    "resize_transform",
    "to_hw",
    "train_transform",
]

# open_clip.constants.OPENAI_DATASET_MEAN / _STD (copied so DataLoader workers need not import
# open_clip; a test asserts they are identical).
OPENAI_DATASET_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_DATASET_STD = (0.26862954, 0.26130258, 0.27577711)

AUGMENTATIONS = ("none", "irra")
INTERPOLATIONS = {"bicubic": v2.InterpolationMode.BICUBIC, "bilinear": v2.InterpolationMode.BILINEAR}


def to_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`224` -> (224, 224); `(384, 128)` -> (384, 128) (height, width)."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"image_size must be an int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def resize_transform(image_size: int | Sequence[int], interpolation: str = "bicubic") -> v2.Compose:
    """PIL image (any mode converted by the caller to RGB) -> uint8 tensor [3, H, W] of exactly `image_size`."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"unknown interpolation {interpolation!r}; choose one of {', '.join(INTERPOLATIONS)}"
        )
    return v2.Compose(
        [
            v2.ToImage(),
            v2.Resize(to_hw(image_size), interpolation=INTERPOLATIONS[interpolation], antialias=True),
        ]
    )


def normalize_transform() -> v2.Compose:
    """uint8 tensor [..., 3, H, W] -> float32 in [0, 1] -> CLIP-normalised (one image or a batch)."""
    return v2.Compose(
        [
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(OPENAI_DATASET_MEAN), std=list(OPENAI_DATASET_STD)),
        ]
    )


def augment_transform(image_size: int | Sequence[int], augment: str = "none") -> v2.Compose | None:
    """The random geometric part of a train augmentation, on the resized uint8 image (None for `none`).

    `irra` (IRRA, CVPR 2023): random horizontal flip, pad 10 (zeros) + random crop back to size.
    """
    _check_augment(augment)
    if augment == "none":
        return None
    return v2.Compose([v2.RandomHorizontalFlip(p=0.5), v2.Pad(10), v2.RandomCrop(to_hw(image_size))])


def erase_transform(augment: str = "none") -> v2.RandomErasing | None:
    """The part of a train augmentation applied after normalising, per image (None for `none`).

    `irra`: random erasing with scale (0.02, 0.4) filled with the CLIP mean values, exactly as
    IRRA's `build_transforms` (which erases after normalising).
    """
    _check_augment(augment)
    if augment == "none":
        return None
    return v2.RandomErasing(scale=(0.02, 0.4), value=list(OPENAI_DATASET_MEAN))


def train_transform(image_size: int | Sequence[int], augment: str = "none") -> v2.Compose:
    """The per-sample part of the train pipeline, on the already resized uint8 image [3, H, W].

    = `augment_transform` + `normalize_transform` + `erase_transform`. (The train stream applies
    the same three pieces but normalises a whole batch at once, which is several times faster.)
    """
    parts = [augment_transform(image_size, augment), normalize_transform(), erase_transform(augment)]
    return v2.Compose([p for p in parts if p is not None])


def _check_augment(augment: str) -> None:
    if augment not in AUGMENTATIONS:
        raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")


def eval_transform(image_size: int | Sequence[int], interpolation: str = "bicubic") -> v2.Compose:
    """PIL image -> CLIP-normalised float32 tensor [3, H, W] (resize + normalise)."""
    return v2.Compose([resize_transform(image_size, interpolation), normalize_transform()])
