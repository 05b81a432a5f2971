"""The caption engine's tile threads under the caller's autograd mode (Lightning tests under inference mode)."""

from __future__ import annotations

import pytest
import torch

from xmodal_bench.metrics import caption_retrieval

from .naive import naive_caption_retrieval


@pytest.fixture
def two_threads():
    previous = torch.get_num_threads()
    torch.set_num_threads(2)  # the engine runs one tile worker per intra-op thread
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("mode", ["inference", "no_grad", "plain"])
def test_threaded_tiles_under_any_autograd_mode_match_the_naive_metrics(two_threads, mode: str) -> None:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(60, 8, generator=g)
    owner = torch.arange(60).repeat_interleave(3)
    texts = images[owner] + 0.8 * torch.randn(180, 8, generator=g)
    context = {"inference": torch.inference_mode, "no_grad": torch.no_grad, "plain": torch.enable_grad}[mode]
    with context():
        got = caption_retrieval(images, texts, owner, chunk_size=16)  # several tiles per thread
    expected = naive_caption_retrieval(images, texts, owner)
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-9), key
