"""Kendall tau-b (`bcls.tau.kendall_tau_b`, Knight's O(n log n) algorithm) against scipy and a naive count."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from xmodal_bench.bcls.tau import _inversions, kendall_tau_b


def _scipy(scores: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    out = []
    for s, r in zip(scores.numpy(), labels.numpy(), strict=True):
        if len(s) < 2 or len(np.unique(s)) < 2 or len(np.unique(r)) < 2:
            out.append(math.nan)  # scipy warns and returns NaN here too
        else:
            out.append(kendalltau(s, r).statistic)
    return np.array(out)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 16, 33, 200])
def test_tau_b_equals_scipy_on_random_data_with_ties(n: int) -> None:
    generator = torch.Generator().manual_seed(n)
    scores = torch.randint(0, 5, (40, n), generator=generator).float()
    labels = torch.randint(0, 4, (40, n), generator=generator).double() / 3
    mine = kendall_tau_b(scores, labels).numpy()
    np.testing.assert_allclose(mine, _scipy(scores, labels), atol=1e-12, equal_nan=True)


def test_tau_b_equals_scipy_on_continuous_scores_and_chunking_does_not_matter() -> None:
    generator = torch.Generator().manual_seed(1)
    scores, labels = torch.randn(25, 300, generator=generator), torch.rand(25, 300, generator=generator)
    labels = labels.round(decimals=1)  # many tied labels, untied scores
    whole = kendall_tau_b(scores, labels)
    np.testing.assert_allclose(whole.numpy(), _scipy(scores, labels), atol=1e-12)
    assert torch.equal(kendall_tau_b(scores, labels, chunk_elements=700), whole)


def test_extremes_and_undefined_rows() -> None:
    x = torch.arange(10.0)[None]
    assert kendall_tau_b(x, x).item() == pytest.approx(1.0)
    assert kendall_tau_b(x, -x).item() == pytest.approx(-1.0)
    assert kendall_tau_b(x, torch.ones(1, 10)).isnan().all()
    with pytest.raises(ValueError):
        kendall_tau_b(x, torch.ones(1, 9))


def test_inversion_count_equals_the_pairwise_count() -> None:
    generator = torch.Generator().manual_seed(2)
    for n in (1, 2, 5, 8, 9, 31):
        values = torch.randint(0, n, (6, n), generator=generator)
        naive = [
            sum(1 for i, j in itertools.combinations(range(n), 2) if row[i] > row[j])
            for row in values.tolist()
        ]
        assert _inversions(values).tolist() == naive
