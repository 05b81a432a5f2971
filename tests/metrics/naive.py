"""Independent reference implementations: the full score matrix, stable sorts and plain loops.

Written from the protocol definitions (VSE's i2t/t2i evaluation, IRRA's `rank`), sharing no code
with xmodal_bench.metrics.
"""

from __future__ import annotations

import numpy as np
import torch


def full_scores(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """[N, M] float32 scores in one matmul."""
    return image_emb.float() @ text_emb.float().T


def stable_positions(row: torch.Tensor) -> np.ndarray:
    """positions[g] = where gallery item g lands in a stable descending sort of the row."""
    order = torch.sort(row, descending=True, stable=True).indices.numpy()
    positions = np.empty(len(order), dtype=np.int64)
    positions[order] = np.arange(len(order))
    return positions


def naive_caption_ranks(scores: torch.Tensor, text_to_image) -> tuple[np.ndarray, np.ndarray]:
    """i2t: min over an image's captions of their position in its row; t2i: the owner's position."""
    scores = scores.cpu()
    owner = np.asarray(text_to_image)
    n, m = scores.shape
    i2t = np.array([stable_positions(scores[i])[owner == i].min() for i in range(n)])
    t2i = np.array([stable_positions(scores[:, c])[owner[c]] for c in range(m)])
    return i2t, t2i


def naive_caption_metrics(i2t: np.ndarray, t2i: np.ndarray) -> dict[str, float]:
    out = {}
    for name, ranks in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * len(np.where(ranks < k)[0]) / len(ranks)
        out[f"{name}_medr"] = np.floor(np.median(ranks)) + 1
        out[f"{name}_meanr"] = ranks.mean() + 1
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def naive_caption_retrieval(image_emb, text_emb, text_to_image) -> dict[str, float]:
    return naive_caption_metrics(*naive_caption_ranks(full_scores(image_emb, text_emb), text_to_image))


def naive_coco_1k(image_emb, text_emb, text_to_image) -> dict[str, float]:
    owner = np.asarray(text_to_image)
    folds = np.array_split(np.arange(image_emb.shape[0]), 5)
    results = []
    for fold in folds:
        captions = np.nonzero(np.isin(owner, fold))[0]
        results.append(
            naive_caption_retrieval(image_emb[fold], text_emb[captions], owner[captions] - fold[0])
        )
    return {key: float(np.mean([r[key] for r in results])) for key in results[0]}


def naive_person(scores: torch.Tensor, query_pids, gallery_pids) -> tuple[dict[str, float], list[np.ndarray]]:
    """IRRA's `rank` with a stable sort, AP and INP written as loops. Returns metrics and, per
    query, the sorted ranks of its positives."""
    scores = scores.cpu()
    q_pids, g_pids = np.asarray(query_pids), np.asarray(gallery_pids)
    hits1 = hits5 = hits10 = 0
    aps, inps, all_ranks = [], [], []
    for q in range(scores.shape[0]):
        order = torch.sort(scores[q], descending=True, stable=True).indices.numpy()
        matches = g_pids[order] == q_pids[q]
        positive_ranks = np.nonzero(matches)[0]
        all_ranks.append(positive_ranks)
        hits1 += matches[:1].any()
        hits5 += matches[:5].any()
        hits10 += matches[:10].any()
        ap, found = 0.0, 0
        for position, is_match in enumerate(matches):
            if is_match:
                found += 1
                ap += found / (position + 1)
        aps.append(ap / found)
        inps.append(found / (positive_ranks[-1] + 1))
    n = scores.shape[0]
    metrics = {
        "r1": 100 * hits1 / n,
        "r5": 100 * hits5 / n,
        "r10": 100 * hits10 / n,
        "map": 100 * float(np.mean(aps)),
        "minp": 100 * float(np.mean(inps)),
    }
    return metrics, all_ranks


def quantised(generator: torch.Generator, rows: int, dim: int, levels: int = 3, scale: float = 4.0):
    """Embeddings whose dot products are exact in float32 (and representable in fp16/bf16),
    so every summation order gives the same bits and ties are real ties."""
    return torch.randint(-levels, levels + 1, (rows, dim), generator=generator).float() / scale
