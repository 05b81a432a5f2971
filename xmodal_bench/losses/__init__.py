"""Losses as pure functions of embeddings, scores and labels (no modules, no state)."""

from xmodal_bench.losses.infonce import infonce, match_mask, soft_target_cross_entropy
from xmodal_bench.losses.triplet import hardest_negative_triplet

__all__ = ["hardest_negative_triplet", "infonce", "match_mask", "soft_target_cross_entropy"]
