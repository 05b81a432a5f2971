"""TGDT's Consistent Multimodal Contrastive (CMC) loss (Liu et al., IEEE TIP 2023).

Three terms over a batch of B image-caption pairs (rows = images, columns = captions):

- `global`: hardest-negative triplet on the global cosine matrix S = V T^T, margin 0.2, both
  directions, summed over the batch (VSE++ max violation; `losses.triplet`).
- `consistency` (intra-modal): the image-image and caption-caption similarity structures should
  agree. With Sv = V V^T and St = T T^T (cosines of L2-normalised global embeddings),

      sum over j of [ max over i of |St[i, j] - Sv[i, j]| - m_c ]_+ ,   m_c = 0.3

  which is what the released code computes (`ContrastiveLoss.forward` in LCFractal/TGDT's
  models/loss.py: element-wise |St - Sv|, max over rows, hinge at 0.3, sum over columns). Two
  captions of one image met in a batch get Sv = 1, so the term also pulls them together.
- `local`: the same hardest-negative triplet on the fine token score matrix (mean over words of
  the max over image tokens of cosine), margin 0.2.

Pairs marked in `positives` (another caption of the same image in the batch) are never used as
negatives by the two triplet terms; the released code has no such mask (it treats them as
negatives).

`hardest=False` replaces the max over negatives by their mean (VSE0-style), for a warm-up from
random weights: there, every embedding starts out nearly identical, and the max-violation hinge
is lowered fastest by shrinking all differences, so it collapses to the constant 2 B m (all
scores equal). The released code starts from pretrained encoders and never needs it.
"""

from __future__ import annotations

from torch import Tensor

from xmodal_bench.losses.triplet import hardest_negative_triplet, mean_negative_triplet


def consistency_loss(image_emb: Tensor, text_emb: Tensor, margin: float = 0.3) -> Tensor:
    """sum_j [max_i |<t_i, t_j> - <v_i, v_j>| - margin]_+ for L2-normalised [B, D] embeddings."""
    gap = (text_emb @ text_emb.T - image_emb @ image_emb.T).abs()
    return (gap.amax(dim=0) - margin).clamp(min=0).sum()


def cmc_loss(
    image_emb: Tensor,
    text_emb: Tensor,
    fine_scores: Tensor,
    positives: Tensor | None = None,
    margin: float = 0.2,
    consistency_margin: float = 0.3,
    hardest: bool = True,
) -> dict[str, Tensor]:
    """The three CMC terms (unweighted, sum reduction) as {"global", "consistency", "local"}.

    image_emb, text_emb [B, D] L2-normalised global embeddings of aligned pairs; fine_scores
    [B, B] fine score of image i (row) with caption j (column); positives [B, B] bool (default:
    the diagonal) marks pairs that are not negatives. `hardest=False`: the two hinges average
    over all negatives instead (warm-up from random weights, see the module doc).
    """
    triplet = hardest_negative_triplet if hardest else mean_negative_triplet
    return {
        "global": triplet(image_emb @ text_emb.T, positives, margin),
        "consistency": consistency_loss(image_emb, text_emb, consistency_margin),
        "local": triplet(fine_scores, positives, margin),
    }
