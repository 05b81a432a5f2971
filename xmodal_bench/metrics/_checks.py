"""Input checks shared by the metric functions: each failure is one `UserError` line naming the fix."""

from __future__ import annotations

import torch
from torch import Tensor

from xmodal_bench.errors import UserError


def check_embeddings(name: str, x: Tensor) -> Tensor:
    """A non-empty 2-D floating tensor of finite values."""
    if not isinstance(x, Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2:
        raise UserError(f"{name} must be 2-D [items, dim], got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise UserError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise UserError(f"{name} is empty (shape {tuple(x.shape)})")
    # A sum is one fast pass and NaN / inf propagate into it; only if it is not finite (or the
    # values are so large that it overflows) does the exact elementwise check run.
    if not bool(torch.isfinite(x.sum())) and not bool(torch.isfinite(x).all()):
        raise UserError(f"{name} contains NaN or infinite values")
    return x


def check_pair(query_name: str, query: Tensor, gallery_name: str, gallery: Tensor) -> None:
    """Two embedding matrices that can be scored against each other."""
    if query.shape[1] != gallery.shape[1]:
        raise UserError(
            f"{query_name} has dim {query.shape[1]} but {gallery_name} has dim {gallery.shape[1]}; "
            "both must come from the same model"
        )
    if query.device != gallery.device:
        raise UserError(f"{query_name} is on {query.device} but {gallery_name} is on {gallery.device}")


def check_labels(name: str, x: Tensor, length: int, device: torch.device) -> Tensor:
    """A 1-D integer tensor with one entry per item, moved to `device` as int64."""
    if not isinstance(x, Tensor):
        raise UserError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 1:
        raise UserError(f"{name} must be 1-D, got shape {tuple(x.shape)}")
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise UserError(f"{name} must hold integers, got dtype {x.dtype}")
    if x.shape[0] != length:
        raise UserError(f"{name} has {x.shape[0]} entries but there are {length} items")
    return x.to(device=device, dtype=torch.int64)


def check_owner_index(text_to_image: Tensor, num_texts: int, num_images: int, device: torch.device) -> Tensor:
    """`text_to_image` as int64: one in-range image index per caption, and every image owns a caption."""
    owner = check_labels("text_to_image", text_to_image, num_texts, device)
    low, high = int(owner.min()), int(owner.max())
    if low < 0 or high >= num_images:
        raise UserError(
            f"text_to_image holds image indices in [{low}, {high}] but there are {num_images} images "
            f"(valid: 0..{num_images - 1})"
        )
    counts = torch.bincount(owner, minlength=num_images)
    orphans = int((counts == 0).sum())
    if orphans:
        first = int(torch.nonzero(counts == 0)[0])
        raise UserError(
            f"{orphans} of {num_images} images have no caption in text_to_image (first: image {first}); "
            "every image needs at least one caption"
        )
    return owner
