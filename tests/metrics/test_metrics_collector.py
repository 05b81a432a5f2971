"""EmbeddingCollector: padding dropped, duplicates removed, order restored, counts checked; and a
real 2-process gloo group with uneven updates per rank."""

from __future__ import annotations

import os
import socket
import tempfile

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xmodal_bench.errors import UserError
from xmodal_bench.metrics import EmbeddingCollector, EmbeddingCountError

NUM_ITEMS, DIM = 23, 5


def item_features(index: torch.Tensor) -> torch.Tensor:
    """Deterministic features per item, so every copy of an item is identical."""
    return index[:, None].float() * 10 + torch.arange(DIM).float()


def batch(indices: list[int], pad: int = 0) -> dict:
    """A batch of the given items plus `pad` padded entries (valid=False, index -1, garbage features)."""
    index = torch.tensor(indices + [-1] * pad, dtype=torch.long)
    valid = index >= 0
    feats = torch.where(
        valid[:, None], item_features(index.clamp(min=0)), torch.full((len(index), DIM), 999.0)
    )
    return {
        "features": {"emb": feats, "small": feats[:, :2].half()},
        "index": index,
        "valid": valid,
        "pid": torch.where(valid, index // 3, -7),
        "image_index": torch.where(valid, index // 2, -7),
    }


def update(collector: EmbeddingCollector, b: dict) -> None:
    collector.update(b["features"], b["index"], b["valid"], pid=b["pid"], image_index=b["image_index"])


def check_full_set(out: dict) -> None:
    index = torch.arange(NUM_ITEMS)
    assert torch.equal(out["index"], index)
    assert torch.equal(out["emb"], item_features(index))
    assert out["small"].dtype == torch.float16 and torch.equal(
        out["small"], item_features(index)[:, :2].half()
    )
    assert torch.equal(out["pid"], index // 3)
    assert torch.equal(out["image_index"], index // 2)


def test_single_process_drops_padding_duplicates_and_restores_order():
    collector = EmbeddingCollector(["emb", "small"], label_names=["pid", "image_index"], expected=NUM_ITEMS)
    order = torch.randperm(NUM_ITEMS, generator=torch.Generator().manual_seed(0)).tolist()
    update(collector, batch(order[:10], pad=3))
    update(collector, batch(order[10:] + order[:4]))  # four items delivered twice
    update(collector, batch([], pad=4))  # a batch of padding only
    check_full_set(collector.compute())


def test_count_mismatch_fails_loudly():
    collector = EmbeddingCollector(["emb", "small"], label_names=["pid", "image_index"])
    update(collector, batch(list(range(20)), pad=2))
    assert collector.compute()["index"].shape[0] == 20  # no expectation: whatever was collected
    collector = EmbeddingCollector(["emb", "small"], label_names=["pid", "image_index"], expected=NUM_ITEMS)
    update(collector, batch(list(range(20)), pad=2))
    with pytest.raises(EmbeddingCountError, match=r"expected 23 items .* got 20 distinct items"):
        collector.compute()
    collector = EmbeddingCollector(["emb", "small"], label_names=["pid", "image_index"])
    update(collector, batch([*range(1, 20), 40]))
    with pytest.raises(UserError, match=r"expected 20 .* indices 1\.\.40"):
        collector.compute(expected=20)


def test_update_checks_names_and_lengths():
    collector = EmbeddingCollector(["emb"], label_names=["pid"])
    with pytest.raises(ValueError, match="missing"):
        collector.update({"other": torch.zeros(2, 3)}, torch.arange(2), pid=torch.arange(2))
    with pytest.raises(ValueError, match="rows"):
        collector.update({"emb": torch.zeros(3, 3)}, torch.arange(2), pid=torch.arange(2))
    with pytest.raises(ValueError, match="unique"):
        EmbeddingCollector(["emb", "index"])
    collector.update(
        {"emb": torch.zeros(2, 3)}, torch.arange(2), pid=torch.arange(2)
    )  # valid defaults to all
    assert collector.compute(expected=2)["emb"].shape == (2, 3)


@pytest.mark.filterwarnings("ignore:The ``compute`` method:UserWarning")
def test_names_inferred_from_the_first_update():
    collector = EmbeddingCollector()
    update(collector, batch([3, 1, 2, 0], pad=1))
    assert collector.feature_names == ("emb", "small") and collector.label_names == ("pid", "image_index")
    out = collector.compute(expected=4)
    assert list(out) == ["index", "pid", "image_index", "emb", "small"]
    assert torch.equal(out["index"], torch.arange(4))
    with pytest.raises(ValueError, match="missing"):
        collector.update({"emb": torch.zeros(1, DIM)}, torch.arange(1), pid=torch.arange(1))
    collector.reset()
    with pytest.raises(EmbeddingCountError, match="no items"):
        collector.compute()


# --- DDP: 2 processes, gloo, uneven updates and items per rank -------------------------------------

RANK_BATCHES = {
    # rank 0: three updates of different sizes, one item (5) also sent by rank 1, padding
    0: [([0, 2, 4, 6], 0), ([8, 10, 12, 14, 16, 18, 20], 2), ([22, 5], 0)],
    # rank 1: one big update with padding
    1: [([1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21], 5)],
}


def _worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        names = dict(label_names=["pid", "image_index"])
        uneven = EmbeddingCollector(["emb", "small"], expected=NUM_ITEMS, **names)
        for indices, pad in RANK_BATCHES[rank]:
            update(uneven, batch(indices, pad))
        # one rank never updates at all (and, names not given, must learn them from the other)
        lonely = EmbeddingCollector(expected=NUM_ITEMS)
        if rank == 1:
            update(lonely, batch(list(range(NUM_ITEMS)), pad=1))
        results = {"uneven": uneven.compute(), "lonely": lonely.compute()}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_ddp_two_ranks_gather_the_full_set():
    with tempfile.TemporaryDirectory() as out_dir:
        # fork: the children inherit the imported modules (a fresh interpreter spends ~8 s importing
        # torchmetrics); they set one intra-op thread before touching torch.
        mp.start_processes(_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True, start_method="fork")
        for rank in (0, 1):
            results = torch.load(os.path.join(out_dir, f"rank{rank}.pt"))
            check_full_set(results["uneven"])
            check_full_set(results["lonely"])
