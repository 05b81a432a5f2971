"""Two gloo processes = one process: every method's training step, loss and gradients, on a batch
split over two ranks equals the same step on the whole batch in one process.

Each rank takes half of one fixed batch (with repeated person ids, so same-person positives cross
ranks), runs `training_step`, and averages its gradients with the other rank as DDP does. The
in-batch losses gather the features of both ranks (with gradients), so the loss of every rank is
the loss of the whole batch and the averaged gradients are the whole batch's.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from xmodal_bench.config import compose
from xmodal_bench.registry import create_method, method_sections

pytestmark = [pytest.mark.ddp, pytest.mark.slow]

# (method spec, dataset, overrides): every registered method, plain and with the BCLS plugin
CASES = [
    ("clip", "synth_reid", []),
    ("irra", "synth_reid", []),
    ("tgdt", "synth_reid", []),
    ("aladin", "synth_reid", ["aladin.dropout=0"]),
    ("clip+bcls", "synth_reid", []),
    ("tgdt+bcls", "synth_reid", ["bcls.window=4"]),
    ("aladin+bcls", "synth", ["aladin.dropout=0"]),
]
BATCH = 8


def _config(spec: str, dataset: str, root: Path, overrides: list[str]):
    parts, sections = method_sections(spec)
    return compose(
        parts,
        sections,
        dataset,
        "tiny",
        overrides=[f"data.root={root}", "backbone.pretrained=none", "data.train_identities=12", *overrides],
    )


def _batch(tokenizer, image_size: tuple[int, int]) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    words = ["red", "blue", "green", "black", "white", "pink", "grey", "brown"]
    captions = [f"a person in a {words[i]} shirt and {words[(3 * i) % 8]} shoes" for i in range(BATCH)]
    return {
        "image": torch.randn(BATCH, 3, *image_size, generator=generator),
        "text": tokenizer(captions),
        "pid": torch.tensor([0, 1, 2, 0, 3, 1, 4, 5]),  # positives on both halves
        "image_index": torch.tensor([0, 1, 2, 3, 4, 5, 6, 7]),
        "caption_index": torch.tensor([0, 2, 4, 6, 8, 10, 12, 14]),
    }


def _step(spec: str, dataset: str, root: Path, overrides: list[str], batch: dict) -> tuple[float, dict]:
    torch.manual_seed(0)
    method = create_method(_config(spec, dataset, root, overrides))
    method.log_dict = method.log = lambda *args, **kwargs: None
    method.setup("fit")
    loss = method.training_step(batch, 0)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in method.named_parameters() if p.grad is not None}
    return float(loss.detach()), grads


def _worker(rank: int, port: int, root: str, out: str) -> None:
    import open_clip

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=32)
    results = {}
    for spec, dataset, overrides in CASES:
        size = (96, 32) if dataset == "synth_reid" else (64, 64)
        whole = _batch(tokenizer, size)
        half = {k: v[rank * BATCH // 2 : (rank + 1) * BATCH // 2] for k, v in whole.items()}
        loss, grads = _step(spec, dataset, Path(root), overrides, half)
        losses = torch.tensor([loss])
        dist.all_reduce(losses)  # what Lightning logs: the mean over ranks
        for grad in grads.values():
            dist.all_reduce(grad)  # what DDP does: the mean over ranks
            grad /= 2
        results[spec] = (float(losses) / 2, grads)
    if rank == 0:
        torch.save(results, out)
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_method_on_two_ranks_equals_one_process(synth_root, tokenizer, tmp_path) -> None:
    out = tmp_path / "two.pt"
    mp.spawn(_worker, args=(_free_port(), str(synth_root), str(out)), nprocs=2, join=True)
    two = torch.load(out, weights_only=True)
    for spec, dataset, overrides in CASES:
        size = (96, 32) if dataset == "synth_reid" else (64, 64)
        loss, grads = _step(spec, dataset, synth_root, overrides, _batch(tokenizer, size))
        two_loss, two_grads = two[spec]
        assert two_loss == pytest.approx(loss, rel=1e-5), spec
        assert set(two_grads) == set(grads), spec
        for name, grad in grads.items():  # float32 sums in another order: 1e-5 of the gradient's norm
            error = float((two_grads[name] - grad).norm() / grad.norm().clamp(min=1e-12))
            assert error < 1e-5, f"{spec}: {name}: relative error {error:.2e}"
