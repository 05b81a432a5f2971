"""Losses as pure functions of embeddings, scores and labels (no modules, no state)."""

from xmodal_bench.losses.cmc import cmc_loss, consistency_loss
from xmodal_bench.losses.distill import listwise_distillation
from xmodal_bench.losses.identity import identity_accuracy, identity_loss
from xmodal_bench.losses.infonce import infonce, match_mask, score_infonce, soft_target_cross_entropy
from xmodal_bench.losses.kendall import kendall_rank_loss
from xmodal_bench.losses.mlm import mask_tokens, masked_lm_accuracy, masked_lm_loss
from xmodal_bench.losses.sdm import sdm_loss
from xmodal_bench.losses.swhs import swhs_kendall_loss
from xmodal_bench.losses.triplet import hardest_negative_triplet, mean_negative_triplet
from xmodal_bench.losses.triplet_sn import soft_negative_triplet

__all__ = [
    "cmc_loss",
    "consistency_loss",
    "hardest_negative_triplet",
    "identity_accuracy",
    "identity_loss",
    "infonce",
    "kendall_rank_loss",
    "listwise_distillation",
    "mask_tokens",
    "masked_lm_accuracy",
    "masked_lm_loss",
    "match_mask",
    "mean_negative_triplet",
    "score_infonce",
    "sdm_loss",
    "soft_negative_triplet",
    "soft_target_cross_entropy",
    "swhs_kendall_loss",
]
