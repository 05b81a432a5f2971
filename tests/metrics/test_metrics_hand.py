"""Tiny examples whose expected numbers are worked out by hand in the comments."""

from __future__ import annotations

import pytest
import torch

from xmodal_bench.errors import UserError
from xmodal_bench.metrics import (
    caption_metrics_from_ranks,
    caption_ranks,
    caption_retrieval,
    person_metrics_from_ranks,
    person_ranks,
    person_retrieval,
)

# 3 images, 6 captions (2, 1 and 3 captions per image); scores = dot products.
IMAGES = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
TEXTS = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [1.0, 1.0], [1.0, 1.0], [2.0, 0.0]])
OWNER = torch.tensor([0, 0, 1, 2, 2, 2])
# score matrix (rows: images, columns: captions c0..c5)
#   i0: 1 0 0 1 1 2   stable order c5 c0 c3 c4 c1 c2 -> own c0 at 1, c1 at 4 -> i2t 1
#   i1: 0 1 1 1 1 0   order c1 c2 c3 c4 c0 c5        -> own c2 at 1          -> i2t 1
#   i2: 1 1 1 2 2 2   order c3 c4 c5 c0 c1 c2        -> own c3 at 0          -> i2t 0
# columns, owner's place in a stable descending sort over images:
#   c0 (1,0,1) owner i0 -> 0;  c1 (0,1,1) i0 -> 2;  c2 (0,1,1) i1 -> 0
#   c3 (1,1,2) i2 -> 0;        c4 (1,1,2) i2 -> 0;  c5 (2,0,2) i2 -> 1 (tie with i0, which comes first)
EXPECTED_I2T = [1, 1, 0]
EXPECTED_T2I = [0, 2, 0, 0, 0, 1]


@pytest.mark.parametrize("chunk", [1, 2, 3, None])
def test_caption_ranks_by_hand(chunk):
    i2t, t2i = caption_ranks(IMAGES, TEXTS, OWNER, chunk_size=chunk)
    assert i2t.tolist() == EXPECTED_I2T
    assert t2i.tolist() == EXPECTED_T2I


def test_caption_metrics_by_hand():
    metrics = caption_retrieval(IMAGES, TEXTS, OWNER)
    assert metrics == pytest.approx(
        {
            "i2t_r1": 100 / 3,  # one of three images at rank 0
            "i2t_r5": 100.0,
            "i2t_r10": 100.0,
            "t2i_r1": 400 / 6,  # four of six captions at rank 0
            "t2i_r5": 100.0,
            "t2i_r10": 100.0,
            "rsum": 100 / 3 + 400 / 6 + 400.0,
            "i2t_medr": 2.0,  # median(1, 1, 0) = 1 -> floor(1) + 1
            "t2i_medr": 1.0,  # median(0, 0, 0, 0, 1, 2) = 0 -> 1
            "i2t_meanr": 2 / 3 + 1,
            "t2i_meanr": 3 / 6 + 1,
        }
    )
    assert list(metrics) == [
        "i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
        "rsum", "i2t_medr", "t2i_medr", "i2t_meanr", "t2i_meanr",
    ]  # fmt: skip


def test_median_rank_of_an_even_count_is_floored():
    metrics = caption_metrics_from_ranks(torch.tensor([0, 1]), torch.tensor([2, 5, 1, 0]))
    assert metrics["i2t_medr"] == 1.0  # median 0.5 -> 0 + 1
    assert metrics["t2i_medr"] == 2.0  # median 1.5 -> 1 + 1
    assert metrics["t2i_meanr"] == 3.0  # mean 2 + 1
    assert metrics["t2i_r5"] == 75.0


# Person: gallery = one-hot images (score of query q with image j = q[j]), pids 7 7 8 9.
GALLERY = torch.eye(4)
GALLERY_PIDS = torch.tensor([7, 7, 8, 9])
QUERIES = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.2, 0.2, 0.2, 0.2], [0.0, 0.0, 0.0, 1.0]])
QUERY_PIDS = torch.tensor([7, 8, 9])
# q0 (pid 7): order g1 g2 g3 g0 -> positives at ranks 0, 3: AP = (1/1 + 2/4)/2 = 0.75, INP = 2/4
# q1 (pid 8): all tied -> index order g0 g1 g2 g3 -> rank 2: AP = INP = 1/3
# q2 (pid 9): g3 first -> rank 0: AP = INP = 1
EXPECTED_PERSON = {
    "r1": 200 / 3,
    "r5": 100.0,
    "r10": 100.0,
    "map": 100 * (0.75 + 1 / 3 + 1) / 3,
    "minp": 100 * (0.5 + 1 / 3 + 1) / 3,
}


@pytest.mark.parametrize("chunk", [1, 2, None])
def test_person_by_hand(chunk):
    ranks = person_ranks(QUERIES, GALLERY, QUERY_PIDS, GALLERY_PIDS, chunk_size=chunk)
    assert ranks.tolist() == [[0, 3], [2, -1], [0, -1]]
    got = person_retrieval(QUERIES, GALLERY, QUERY_PIDS, GALLERY_PIDS, chunk_size=chunk)
    assert got == pytest.approx(EXPECTED_PERSON)


def test_person_metrics_from_ranks_accepts_padded_and_ragged():
    assert person_metrics_from_ranks(torch.tensor([[3, 0], [-1, 2], [0, -1]])) == pytest.approx(
        EXPECTED_PERSON
    )
    ragged = [torch.tensor([3, 0]), torch.tensor([2]), torch.tensor([0])]
    assert person_metrics_from_ranks(ragged) == pytest.approx(EXPECTED_PERSON)


def test_person_query_without_positive_is_a_user_error():
    with pytest.raises(UserError, match="2 of 4 text queries have no gallery image"):
        person_retrieval(
            torch.ones(4, 2), torch.ones(3, 2), torch.tensor([1, 5, 2, 6]), torch.tensor([1, 2, 2])
        )


def test_caption_bad_inputs_are_user_errors():
    with pytest.raises(UserError, match="no caption"):
        caption_ranks(IMAGES, TEXTS, torch.tensor([0, 0, 0, 2, 2, 2]))
    with pytest.raises(UserError, match="indices in"):
        caption_ranks(IMAGES, TEXTS, torch.tensor([0, 0, 1, 2, 2, 3]))
    with pytest.raises(UserError, match="dim"):
        caption_ranks(IMAGES, torch.ones(6, 3), OWNER)
    with pytest.raises(UserError, match="NaN"):
        caption_ranks(IMAGES, TEXTS.clone().fill_(float("nan")), OWNER)
    with pytest.raises(UserError, match="chunk size"):
        caption_ranks(IMAGES, TEXTS, OWNER, chunk_size=0)
