"""What TGDT and ALADIN share: a fine token score trained by a hinge and re-ranked in two stages.

Both score an image-caption pair by the "max over image tokens, pooled over words" token score
(`retrieval.token_scores`; their released code sums over words, TGDT x10), train it with a triplet
hinge over the batch (the hardest negative, or the mean over negatives while `mean_negative_epochs`
last), and hand it to the two-stage engine as their fine scorer. `TokenScoreMixin` holds those
pieces once; the methods keep their own heads and set `word_pooling` from their config.
"""

from __future__ import annotations

from torch import Tensor

from xmodal_bench.losses import hardest_negative_triplet
from xmodal_bench.losses.triplet import mean_negative_triplet
from xmodal_bench.retrieval.evaluation import EvalInputs
from xmodal_bench.retrieval.token_scores import WordPooling, hinge_token_scores, token_score_matrix
from xmodal_bench.retrieval.two_stage import FineScorer, token_fine_scorer


class TokenScoreMixin:
    """Mixed into a `RetrievalMethod` whose gathered features carry `tokens` (and text `mask`)."""

    word_pooling: WordPooling

    def hardest_negatives(self, mean_negative_epochs: float) -> bool:
        """Whether this step's hinges use the hardest negative (after the mean-negative warm-up)."""
        return not self.in_first_epochs(mean_negative_epochs)  # type: ignore[attr-defined]

    def batch_token_scores(
        self, text_tokens: Tensor, mask: Tensor, image_tokens: Tensor, positives: Tensor, hardest: bool
    ) -> Tensor:
        """The batch's token scores [images, captions] for a hinge: exact values; with the hardest
        negative, backward runs only through the entries the hinge uses (`hinge_token_scores`)."""
        if hardest:
            return hinge_token_scores(text_tokens, mask, image_tokens, positives, self.word_pooling)
        return token_score_matrix(text_tokens, mask, image_tokens, pooling=self.word_pooling).T

    @staticmethod
    def triplet(scores: Tensor, positives: Tensor, margin: float, hardest: bool) -> Tensor:
        """The triplet hinge over both directions, summed over anchors (hardest or mean negative)."""
        if hardest:
            return hardest_negative_triplet(scores, positives, margin=margin)
        return mean_negative_triplet(scores, positives, margin=margin)

    def fine_scorer(self, inputs: EvalInputs, direction: str) -> FineScorer:
        """The token score over the gathered tokens, for one direction (see `retrieval.two_stage`)."""
        return token_fine_scorer(
            inputs.texts["tokens"],
            inputs.texts["mask"],
            inputs.images["tokens"],
            direction,
            self.word_pooling,
        )
