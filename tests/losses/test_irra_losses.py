"""IRRA's losses as pure functions: SDM by hand, ID, masking statistics, MLM loss masking."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from xmodal_bench.losses.identity import identity_loss
from xmodal_bench.losses.mlm import (
    CLIP_MASK_TOKEN_ID,
    IGNORE_INDEX,
    mask_tokens,
    masked_lm_accuracy,
    masked_lm_loss,
)
from xmodal_bench.losses.sdm import matching_distribution, sdm_loss

SOT, EOT, MASK = 49406, 49407, CLIP_MASK_TOKEN_ID


def test_sdm_on_a_3x3_batch_with_a_repeated_pid_matches_the_hand_computation() -> None:
    # unit vectors at 0, 90 and 60 degrees; samples 0 and 1 are the same person
    image = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, math.sqrt(3) / 2]])
    text = torch.tensor([[2.0, 0.0], [0.0, 3.0], [-1.0, 0.0]])  # lengths do not matter: normalised
    pids = torch.tensor([7, 7, 3])
    scale, eps = 2.0, 1e-8
    # cosines image x text: rows [1, 0, -1], [0, 1, 0], [0.5, sqrt(3)/2, -0.5]
    cos = [[1.0, 0.0, -1.0], [0.0, 1.0, 0.0], [0.5, math.sqrt(3) / 2, -0.5]]
    q = [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]

    def kl_row(values: list[float], target: list[float]) -> float:
        z = sum(math.exp(scale * v) for v in values)
        p = [math.exp(scale * v) / z for v in values]
        return sum(pj * (math.log(pj) - math.log(qj + eps)) for pj, qj in zip(p, target, strict=True))

    i2t = sum(kl_row(cos[i], q[i]) for i in range(3)) / 3
    t2i = sum(kl_row([cos[i][j] for i in range(3)], q[j]) for j in range(3)) / 3
    assert torch.equal(matching_distribution(pids), torch.tensor(q))
    assert sdm_loss(image, text, pids, scale, eps).item() == pytest.approx(i2t + t2i, rel=1e-5)


def test_sdm_is_minimal_for_perfectly_separated_identities() -> None:
    pids = torch.tensor([0, 0, 1, 2])
    emb = F.one_hot(pids, 3).float()  # same-pid samples identical, other pids orthogonal
    loss = sdm_loss(emb, emb, pids, 50.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-3)  # p = q up to e^-50 leakage
    assert sdm_loss(emb, emb.roll(1, dims=0), pids, 50.0) > 10  # misaligned: heavily penalised


def test_identity_loss_is_the_mean_of_both_modalities_cross_entropies() -> None:
    image_logits, text_logits = torch.randn(5, 4), torch.randn(5, 4)
    pids = torch.tensor([0, 1, 2, 3, 0])
    expected = (F.cross_entropy(image_logits, pids) + F.cross_entropy(text_logits, pids)) / 2
    assert identity_loss(image_logits, text_logits, pids).item() == pytest.approx(expected.item())


def _captions(n: int, words: int, generator: torch.Generator) -> torch.Tensor:
    """[n, words + 6] ids: SOT, `words` regular tokens, EOT, padding."""
    ids = torch.zeros(n, words + 6, dtype=torch.long)
    ids[:, 0] = SOT
    ids[:, 1 : words + 1] = torch.randint(1, MASK, (n, words), generator=generator)
    ids[:, words + 1] = EOT
    return ids


def test_masking_statistics_follow_bert_80_10_10_and_never_touch_specials() -> None:
    generator = torch.Generator().manual_seed(0)
    ids = _captions(4000, 40, generator)
    original = ids.clone()
    masked, labels = mask_tokens(ids, generator=generator)
    assert torch.equal(ids, original)  # the clean caption is untouched
    selected = labels != IGNORE_INDEX
    special = (ids == 0) | (ids >= MASK)
    assert not selected[special].any() and torch.equal(masked[special], ids[special])
    assert torch.equal(labels[selected], ids[selected]) and torch.equal(masked[~selected], ids[~selected])
    rate = selected.sum().item() / (~special).sum().item()
    assert rate == pytest.approx(0.15, abs=0.005)  # 160,000 draws: 4 sigma < 0.004
    became_mask = (masked[selected] == MASK).float().mean().item()
    kept = (masked[selected] == ids[selected]).float().mean().item()
    random = 1 - became_mask - kept
    assert became_mask == pytest.approx(0.8, abs=0.01)
    assert kept == pytest.approx(0.1, abs=0.01) and random == pytest.approx(0.1, abs=0.01)
    replaced = masked[selected & (masked != MASK) & (masked != ids)]
    assert replaced.min() >= 1 and replaced.max() < MASK  # random tokens are regular tokens


def test_every_caption_gets_at_least_one_masked_token() -> None:
    generator = torch.Generator().manual_seed(1)
    ids = _captions(2000, 2, generator)  # two words: 72% of captions draw nothing
    masked, labels = mask_tokens(ids, generator=generator)
    selected = labels != IGNORE_INDEX
    assert selected.any(dim=1).all()
    lonely = selected.sum(dim=1) == 1
    # a caption that drew nothing has its first word replaced by [MASK] (as IRRA's position 1)
    assert (masked[lonely, 1] == MASK).float().mean() > 0.8
    empty = torch.tensor([[SOT, EOT, 0, 0]])
    masked, labels = mask_tokens(empty)  # nothing maskable: left alone
    assert torch.equal(masked, empty) and (labels == IGNORE_INDEX).all()


def test_mlm_loss_and_accuracy_ignore_unmasked_positions() -> None:
    generator = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 5, 11, generator=generator)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3] = 4, 7
    loss = masked_lm_loss(logits, labels)
    expected = F.cross_entropy(torch.stack([logits[0, 1], logits[1, 3]]), torch.tensor([4, 7]))
    assert loss.item() == pytest.approx(expected.item())
    noisy = logits.clone()
    noisy[labels == IGNORE_INDEX] = 100 * torch.randn(8, 11, generator=generator)
    assert masked_lm_loss(noisy, labels).item() == pytest.approx(loss.item())
    logits[0, 1, 4], logits[1, 3, 0] = 50.0, 50.0  # first right, second wrong
    noisy = logits.clone()
    noisy[labels == IGNORE_INDEX] = 100 * torch.randn(8, 11, generator=generator)
    assert masked_lm_accuracy(noisy, labels).item() == pytest.approx(0.5)
    nothing = torch.full((2, 5), IGNORE_INDEX)
    assert masked_lm_loss(logits.requires_grad_(), nothing).item() == 0.0
