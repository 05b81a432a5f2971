"""BCLS pseudo-labels: tf-idf / sbert caption similarity, the per-dataset cache, Kendall's tau."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch

from xmodal_bench.bcls import store as store_module
from xmodal_bench.bcls import text_sim
from xmodal_bench.bcls.store import load_caption_store, split_store
from xmodal_bench.bcls.tau import kendall_tau_b, pseudo_label_tau, tau_from_values
from xmodal_bench.bcls.text_sim import resolve_sbert_model, sbert_vectors, tfidf_vectors
from xmodal_bench.errors import UserError

CAPTIONS = [
    "A red circle on a dark background.",
    "a red circle on a DARK background",  # same words as the first
    "two blue squares",
    "a small red square and a blue circle",
    "green triangle",
]


def test_tfidf_similarity_is_symmetric_and_one_on_identical_captions() -> None:
    vectors = tfidf_vectors(CAPTIONS)
    rows = torch.arange(len(CAPTIONS))
    sim = vectors.similarity(rows, rows)
    assert torch.allclose(sim, sim.T, atol=1e-6)
    assert torch.allclose(sim.diagonal(), torch.ones(len(CAPTIONS)), atol=1e-6)
    assert sim[0, 1].item() == pytest.approx(1.0, abs=1e-6)  # case and punctuation do not matter
    assert sim[2, 4].item() == 0.0  # no common word
    assert 0 < sim[0, 3].item() < 1 and 0 < sim[2, 3].item() < 1
    # the sparse product equals a dense tf-idf computed the plain way
    dense = torch.zeros(len(CAPTIONS), int(vectors.ids.max()) + 1)
    for row in range(len(CAPTIONS)):
        keep = vectors.ids[row] >= 0
        dense[row, vectors.ids[row][keep]] = vectors.values[row][keep]
    assert torch.allclose(sim, dense @ dense.T, atol=1e-6)
    assert torch.allclose(vectors.similarity(rows, rows[:2], chunk=2), sim[:, :2], atol=1e-6)


def test_tfidf_document_frequencies_come_from_the_fit_rows() -> None:
    fitted = tfidf_vectors(CAPTIONS, fit=[True, True, False, False, False])
    everything = tfidf_vectors(CAPTIONS)
    rows = torch.arange(len(CAPTIONS))
    assert not torch.allclose(fitted.similarity(rows, rows), everything.similarity(rows, rows))


class _FakeEncoder:
    """Stands in for a SentenceTransformer: a bag of letters, normalised."""

    calls = 0

    def encode(self, sentences, batch_size, show_progress_bar, convert_to_tensor, normalize_embeddings):
        _FakeEncoder.calls += 1
        out = torch.zeros(len(sentences), 26)
        for row, sentence in enumerate(sentences):
            for char in sentence.lower():
                if char.isalpha():
                    out[row, ord(char) - 97] += 1
        return torch.nn.functional.normalize(out, dim=-1) if normalize_embeddings else out


def test_sbert_vectors_use_the_encoder_dense_and_normalised() -> None:
    vectors = sbert_vectors(CAPTIONS, "any-model", loader=lambda model, device: _FakeEncoder())
    assert vectors.dense is not None and vectors.dense.shape == (5, 26) and vectors.ids is None
    sim = vectors.similarity(torch.arange(5), torch.arange(5))
    assert torch.allclose(sim.diagonal(), torch.ones(5), atol=2e-3) and torch.allclose(sim, sim.T)


def test_sbert_model_resolution_and_missing_package(tmp_path) -> None:
    assert resolve_sbert_model(str(tmp_path)) == str(tmp_path)
    assert resolve_sbert_model("some-org/some-model") == "some-org/some-model"
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match=r"xmodal-bench\[sbert\]"):
            text_sim.load_sentence_transformer("all-MiniLM-L6-v2")


@pytest.fixture
def synth_copy(synth_root, tmp_path):
    """A private copy of the tiny `synth` dataset (the cache is written beside its shards)."""
    shutil.copytree(synth_root / "synth", tmp_path / "data" / "synth")
    return tmp_path / "data"


def test_cache_is_reused_and_invalidated_when_the_manifest_changes(synth_copy, monkeypatch) -> None:
    first = load_caption_store(synth_copy, "synth")
    (cached,) = (synth_copy / "synth" / "bcls").glob("tfidf-*.pt")
    assert first.offsets == {"train": 0, "val": 64 * 5, "test": 96 * 5} and len(first.vectors) == 144 * 5

    reads = []
    real_read = store_module.read_captions
    monkeypatch.setattr(store_module, "read_captions", lambda *a: reads.append(a[-1]) or real_read(*a))
    again = load_caption_store(synth_copy, "synth")
    assert reads == [] and torch.equal(again.vectors.ids, first.vectors.ids)  # served from the cache

    manifest = synth_copy / "synth" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["source"] = {**data.get("source", {}), "note": "re-generated"}
    manifest.write_text(json.dumps(data))
    load_caption_store(synth_copy, "synth")
    assert reads == ["train", "val", "test"]  # recomputed
    (fresh,) = (synth_copy / "synth" / "bcls").glob("tfidf-*.pt")
    assert fresh != cached  # a new key, and the stale file is gone


def test_sbert_cache_is_keyed_by_model(synth_copy, monkeypatch) -> None:
    monkeypatch.setattr(text_sim, "load_sentence_transformer", lambda model, device=None: _FakeEncoder())
    store = load_caption_store(synth_copy, "synth", provider="sbert", model="/models/fake-minilm")
    assert store.vectors.dense is not None and store.key == "sbert-fake-minilm"
    assert [p.name.split("-")[0] for p in (synth_copy / "synth" / "bcls").glob("*.pt")] == ["sbert"]
    calls = _FakeEncoder.calls
    load_caption_store(synth_copy, "synth", provider="sbert", model="/models/fake-minilm")
    assert _FakeEncoder.calls == calls
    with pytest.raises(UserError, match=r"bcls\.provider"):
        load_caption_store(synth_copy, "synth", provider="bm25")


def test_relevance_is_the_max_over_the_image_captions(synth_copy) -> None:
    store = split_store(synth_copy, "synth", "test")
    images, captions = torch.tensor([0, 3, 7]), torch.tensor([0, 1, 17, 36, 200])
    r = store.relevance("test", images, captions)
    assert r.shape == (3, 5)
    assert torch.allclose(r[0, :2], torch.ones(2), atol=1e-6)  # captions 0, 1 belong to image 0
    assert r[1, 2].item() == pytest.approx(1.0, abs=1e-6)  # caption 17 belongs to image 3
    all_rows = torch.arange(48 * 5)
    sim = store.vectors.similarity(all_rows, all_rows)
    for i, image in enumerate(images.tolist()):
        for j, caption in enumerate(captions.tolist()):
            own = range(image * 5, image * 5 + 5)
            assert r[i, j].item() == pytest.approx(max(sim[k, caption].item() for k in own), abs=1e-6)


def _tau_b(x: list[float], y: list[float]) -> float:
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        dx, dy = x[i] - x[j], y[i] - y[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt(
        (concordant + discordant + ties_x) * (concordant + discordant + ties_y)
    )


def test_kendall_tau_b_matches_the_textbook_formula_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 4, (6, 9), generator=generator).float()
    labels = torch.randint(0, 3, (6, 9), generator=generator).float()
    tau = kendall_tau_b(scores, labels, chunk_elements=200)
    for row in range(6):
        assert tau[row].item() == pytest.approx(_tau_b(scores[row].tolist(), labels[row].tolist()), abs=1e-6)
    assert kendall_tau_b(torch.rand(1, 5), torch.ones(1, 5)).isnan().all()  # all labels tied: undefined


class _LinearStore:
    """A label source whose r(image, caption) is a known bilinear score."""

    def __init__(self, images: torch.Tensor, texts: torch.Tensor) -> None:
        self.images, self.texts = images, texts

    def relevance(self, split: str, image_index: torch.Tensor, caption_index: torch.Tensor) -> torch.Tensor:
        return self.images[image_index] @ self.texts[caption_index].T


def test_pseudo_label_tau_is_one_when_scores_follow_the_labels_and_minus_one_reversed() -> None:
    images, texts = torch.randn(20, 8), torch.randn(60, 8)
    labels = _LinearStore(images, texts)
    same, values = pseudo_label_tau(images, texts, labels, "test", queries=25, candidates=15)
    assert same["queries"] == {"t2i": 25, "i2t": 20} and same["candidates"] == {"t2i": 15, "i2t": 15}
    assert same["t2i"] == pytest.approx(1.0) and same["i2t"] == pytest.approx(1.0)
    # each measured query's tau, on its own row: 25 of the 60 captions, every image
    assert values["tau/t2i"].shape == (60,) and int((~values["tau/t2i"].isnan()).sum()) == 25
    assert values["tau/i2t"].shape == (20,) and torch.allclose(
        values["tau/i2t"], torch.ones(20, dtype=torch.float64)
    )
    reversed_, _ = pseudo_label_tau(-images, texts, labels, "test")
    assert reversed_["kendall_tau"] == pytest.approx(-1.0)
    tied, values = pseudo_label_tau(images, texts, _LinearStore(images, torch.zeros(60, 8)), "test")
    assert tied["t2i"] is None and tied["i2t"] is None and tied["kendall_tau"] is None  # JSON null, not NaN
    assert values["tau/t2i"].isnan().all()


def test_each_saved_tau_is_scipys_tau_of_that_query_and_their_mean_is_the_summary() -> None:
    """Per-query taus sit on the query's own row (the subsample's rows, NaN elsewhere), each equal
    to `scipy.stats.kendalltau` of that query's candidates; `tau_from_values` gives back the summary."""
    from scipy.stats import kendalltau

    generator = torch.Generator().manual_seed(3)
    images, texts = torch.randn(30, 6, generator=generator), torch.randn(90, 6, generator=generator)
    store = _LinearStore(torch.randn(30, 6, generator=generator), torch.randn(90, 6, generator=generator))
    summary, values = pseudo_label_tau(images, texts, store, "test", queries=40, candidates=25, seed=5)
    rows = torch.nonzero(~values["tau/t2i"].isnan()).squeeze(1)
    assert len(rows) == 40
    # the candidates are the seeded choice after the queries': redraw them the same way
    generator = torch.Generator().manual_seed(5)
    queries = torch.randperm(90, generator=generator)[:40].sort().values
    candidates = torch.randperm(30, generator=generator)[:25].sort().values
    assert torch.equal(rows, queries)
    for row in rows[:10].tolist():
        scores = (texts[row] @ images[candidates].T).numpy()
        labels = store.relevance("test", candidates, torch.tensor([row]))[:, 0].numpy()
        assert values["tau/t2i"][row].item() == pytest.approx(kendalltau(scores, labels).statistic, abs=1e-9)
    found = tau_from_values(values)
    assert found["kendall_tau/t2i"] == pytest.approx(summary["t2i"], abs=1e-12)
    assert found["kendall_tau"] == pytest.approx(summary["kendall_tau"], abs=1e-12)
    assert tau_from_values({"tau/t2i": values["tau/t2i"]}) == {}  # an older run without both
