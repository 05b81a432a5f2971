"""The CMC loss terms against values worked out by hand on a 3 x 3 batch.

Images v0=(1,0), v1=(0,1), v2=(.6,.8); captions t0=(.8,.6), t1=(0,1), t2=(1,0); margin 0.2.
S = V T^T = [[.8, 0, 1], [.6, 1, 0], [.96, .8, .6]] (rows images, columns captions).
- global, i2t (hardest caption per row): row0 max(0, .2+1-.8)=.4, row1 0, row2 .2+.96-.6=.56;
  t2i (hardest image per column): col0 .2+.96-.8=.36, col1 0, col2 .2+1-.6=.6; total 1.92.
- consistency: Sv = [[1, 0, .6], [0, 1, .8], [.6, .8, 1]], St = [[1, .6, .8], [.6, 1, 0], [.8, 0, 1]],
  |St - Sv| column maxima .6, .8, .8; minus 0.3, clamped, summed: .3 + .5 + .5 = 1.3.
- local on Fm = [[.5, .4, .1], [.2, .3, .35], [.6, 0, .7]]: i2t rows .1, .25, .1; t2i columns
  .3, .3, 0; total 1.05.
"""

from __future__ import annotations

import pytest
import torch

from xmodal_bench.losses import cmc_loss, consistency_loss, match_mask

IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
TEXTS = torch.tensor([[0.8, 0.6], [0.0, 1.0], [1.0, 0.0]])
FINE = torch.tensor([[0.5, 0.4, 0.1], [0.2, 0.3, 0.35], [0.6, 0.0, 0.7]])


def test_terms_match_the_hand_computed_values() -> None:
    terms = cmc_loss(IMAGES, TEXTS, FINE, margin=0.2, consistency_margin=0.3)
    assert set(terms) == {"global", "consistency", "local"}
    assert terms["global"].item() == pytest.approx(1.92, abs=1e-6)
    assert terms["consistency"].item() == pytest.approx(1.3, abs=1e-6)
    assert terms["local"].item() == pytest.approx(1.05, abs=1e-6)


def test_consistency_is_zero_when_both_modalities_agree_within_the_margin() -> None:
    assert consistency_loss(IMAGES, IMAGES).item() == 0.0
    assert consistency_loss(IMAGES, TEXTS, margin=0.9).item() == 0.0


def test_other_captions_of_the_same_image_are_not_negatives() -> None:
    # pairs (0, 2) and (2, 0) are positives: i2t rows .4 -> 0 (only t1 left), 0, .56 -> .4 (only t1);
    # t2i columns .36 -> 0 (only v1), 0, .6 -> 0 (only v1): total 0.4
    terms = cmc_loss(IMAGES, TEXTS, FINE, positives=match_mask(torch.tensor([0, 1, 0])))
    assert terms["global"].item() == pytest.approx(0.4, abs=1e-6)


def test_mean_negative_warm_up_averages_the_violations() -> None:
    # global i2t rows: mean(0, .4)=.2, 0, mean(.56, .4)=.48; t2i columns: mean(0, .36)=.18, 0,
    # mean(.6, 0)=.3; total 1.16. local i2t rows .05, .175, .05; t2i columns .15, .15, 0; total .575.
    terms = cmc_loss(IMAGES, TEXTS, FINE, hardest=False)
    assert terms["global"].item() == pytest.approx(1.16, abs=1e-6)
    assert terms["local"].item() == pytest.approx(0.575, abs=1e-6)
    assert terms["consistency"].item() == pytest.approx(1.3, abs=1e-6)
