"""Losses as pure functions of embeddings, scores and labels (no modules, no state)."""

from xmodal_bench.losses.infonce import infonce, match_mask, soft_target_cross_entropy

__all__ = ["infonce", "match_mask", "soft_target_cross_entropy"]
