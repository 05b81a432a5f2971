"""ECCV Caption / CxC metrics (`metrics.eccv`) against the `eccv-caption` package's own evaluation."""

from __future__ import annotations

import contextlib
import io
import json
import sys

import numpy as np
import pytest
import torch

from xmodal_bench.cli import main
from xmodal_bench.metrics import Gallery, get_protocol, topk
from xmodal_bench.metrics.eccv import (
    ECCV_METRIC_NAMES,
    coco_test_ids,
    embedding_top_k,
    package,
)
from xmodal_bench.metrics.protocols import IdMetrics
from xmodal_bench.metrics.score import score_files


@pytest.fixture(scope="module")
def coco_layout():
    """Random correlated embeddings on the package's own COCO 5K test ids, captions by owner."""
    images, captions = coco_test_ids()
    truth = package().coco_gts["t2i"]
    row = {int(i): r for r, i in enumerate(images)}
    owner = np.array([row[truth[int(c)][0]] for c in captions])
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(len(images), 32, generator=generator)
    image_emb = torch.nn.functional.normalize(
        latent + 0.5 * torch.randn(latent.shape, generator=generator), dim=1
    )
    noise = torch.randn(len(captions), 32, generator=generator)
    text_emb = torch.nn.functional.normalize(latent[owner] + 1.5 * noise, dim=1)
    return images, captions, torch.from_numpy(owner), image_emb, text_emb


def _package_lists(images, captions, image_emb, text_emb, k: int = 60):
    """{query id: top-k gallery ids} of both directions, by plain topk of the score matrix (chunked)."""

    def lists(queries, gallery, query_ids, gallery_ids):
        out = {}
        for start in range(0, len(queries), 2000):
            top = (queries[start : start + 2000] @ gallery.T).topk(k, dim=1).indices.numpy()
            out.update(zip(query_ids[start : start + 2000].tolist(), gallery_ids[top].tolist(), strict=True))
        return out

    return lists(image_emb, text_emb, images, captions), lists(text_emb, image_emb, captions, images)


def _package_evaluation(images, captions, image_emb, text_emb) -> dict[str, float]:
    """The package's compute_all_metrics on plain top-k lists from the whole score matrix."""
    i2t, t2i = _package_lists(images, captions, image_emb, text_emb)
    targets = ("cxc_recalls", "eccv_map_at_r", "eccv_rprecision", "eccv_r1")
    with contextlib.redirect_stderr(io.StringIO()):
        scores = package().compute_all_metrics(i2t, t2i, target_metrics=targets, Ks=(1, 5, 10))
    out = {}
    for name in ECCV_METRIC_NAMES:
        family, metric = name.split("/")
        direction, _, what = metric.partition("_")
        out[name] = 100 * float(scores[f"{family}_{what}"][direction])
    return out


def test_eccv_and_cxc_equal_the_package_and_ignore_row_order(coco_layout) -> None:
    images, captions, owner, image_emb, text_emb = coco_layout
    coco = get_protocol("coco")
    gallery = Gallery(owner, image_emb, text_emb, image_ids=images, caption_ids=captions)
    found = coco.id_metrics(gallery)
    mine = found.metrics
    assert found.note is None and list(mine) == list(ECCV_METRIC_NAMES)
    expected = _package_evaluation(images, captions, image_emb, text_emb)
    assert mine == pytest.approx(expected, abs=1e-9)
    assert 0 < mine["eccv/t2i_map_at_r"] < 100  # not a degenerate layout
    # rows shuffled together with their ids (and the owners renumbered): the same numbers
    generator = torch.Generator().manual_seed(1)
    image_perm = torch.randperm(len(images), generator=generator)
    caption_perm = torch.randperm(len(captions), generator=generator)
    new_row = torch.empty_like(image_perm)
    new_row[image_perm] = torch.arange(len(images))
    shuffled = Gallery(
        new_row[owner[caption_perm]],
        image_emb[image_perm],
        text_emb[caption_perm],
        image_ids=images[image_perm.numpy()],
        caption_ids=captions[caption_perm.numpy()],
    )
    again = coco.id_metrics(shuffled)
    assert again.metrics == pytest.approx(mine, abs=1e-9)
    # each query row's values move with its row
    for name, values in found.per_query.items():
        perm = image_perm if "/i2t_" in name else caption_perm
        assert torch.equal(again.per_query[name].isnan(), values[perm].isnan())
        assert torch.allclose(again.per_query[name].nan_to_num(-1), values[perm].nan_to_num(-1))


def test_each_query_value_is_the_package_score_of_that_query_alone(coco_layout) -> None:
    """Per-query values (what the bootstrap resamples) against the package run on one query at a time."""
    from eccv_caption import _metrics

    images, captions, owner, image_emb, text_emb = coco_layout
    values = (
        get_protocol("coco")
        .id_metrics(Gallery(owner, image_emb, text_emb, image_ids=images, caption_ids=captions))
        .per_query
    )
    lists = dict(zip(("i2t", "t2i"), _package_lists(images, captions, image_emb, text_emb), strict=True))
    rows = {
        "i2t": {int(i): r for r, i in enumerate(images)},
        "t2i": {int(c): r for r, c in enumerate(captions)},
    }
    for direction in ("i2t", "t2i"):
        eccv, cxc = package().eccv_gts[direction], package().cxc_gts[direction]
        for query in list(eccv)[:: len(eccv) // 40]:
            one = {query: lists[direction][query]}
            with contextlib.redirect_stderr(io.StringIO()):
                expected = _metrics.compute_eccv_metrics(one, {query: eccv[query]})
            for what in ("map_at_r", "rprecision", "r1"):
                got = float(values[f"eccv/{direction}_{what}"][rows[direction][query]])
                assert got == pytest.approx(float(expected[f"eccv_{what}"]), abs=1e-12)
        for query in list(cxc)[:: len(cxc) // 40]:
            for k in (1, 5, 10):
                expected = _metrics.compute_r_at_k({query: lists[direction][query]}, {query: cxc[query]}, K=k)
                assert float(values[f"cxc/{direction}_r{k}"][rows[direction][query]]) == expected
        outside = [r for q, r in rows[direction].items() if q not in eccv]
        assert values[f"eccv/{direction}_map_at_r"][outside].isnan().all()  # not an ECCV query


def test_a_coco_run_gets_intervals_and_pairs_on_the_eccv_columns(coco_layout, tmp_path, capsys) -> None:
    """evaluate_modes saves the per-query values with the ranks; compare and the leaderboard use them."""
    from xmodal_bench.report.ranks import save_ranks
    from xmodal_bench.report.results import RESULTS_FILE, RESULTS_SCHEMA, find_results
    from xmodal_bench.report.significance import annotate
    from xmodal_bench.report.tables import build_rows
    from xmodal_bench.retrieval.evaluation import EvalInputs, evaluate_modes, global_mode

    images, captions, owner, image_emb, text_emb = coco_layout
    coco = get_protocol("coco")
    folders = []
    for seed, noise in enumerate((0.0, 0.3)):
        jitter = noise * torch.randn(text_emb.shape, generator=torch.Generator().manual_seed(seed))
        texts = torch.nn.functional.normalize(text_emb + jitter, dim=1)
        pids = {"pid": torch.zeros(len(images), dtype=torch.long)}
        inputs = EvalInputs(
            {"global": image_emb, **pids},
            {"global": texts, "pid": torch.zeros(len(captions), dtype=torch.long), "image_index": owner},
            "coco",
            ids=(images, captions),
        )
        report = evaluate_modes(None, inputs, [global_mode()], with_latency=False)
        metrics, ranks = report["modes"]["global"]["metrics"], report["ranks"]["global"]
        assert set(ECCV_METRIC_NAMES) <= set(ranks)  # the per-query values travel with the ranks
        assert coco.metrics(ranks) == pytest.approx(metrics, abs=1e-6)  # and give the same numbers
        folder = tmp_path / "coco" / "clip" / f"run{seed}"
        folder.mkdir(parents=True)
        record = {
            "schema": RESULTS_SCHEMA, "method": "clip" if seed == 0 else "irra", "dataset": "coco",
            "protocol": "coco", "scale": "tiny", "seed": 0, "config_id": f"c{seed}",
            "primary_mode": "global", "metrics": metrics, "modes": report["modes"], "efficiency": {},
        }  # fmt: skip
        (folder / RESULTS_FILE).write_text(json.dumps(record))
        save_ranks(folder, report["ranks"])
        folders.append(folder)
    assert main(["compare", str(folders[0]), str(folders[0]), "--json", "--resamples", "30"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["metrics"]}
    assert set(ECCV_METRIC_NAMES) <= set(rows)
    assert all(rows[n]["difference"] == 0 and rows[n]["p"] == 1.0 for n in ECCV_METRIC_NAMES)
    assert main(["compare", str(folders[0]), str(folders[1]), "--json", "--resamples", "30"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["metrics"]}
    cell = rows["eccv/t2i_map_at_r"]
    assert cell["difference"] > 0 and cell["low"] <= cell["difference"] <= cell["high"]
    board = build_rows(find_results(tmp_path))
    annotate(board, coco, resamples=30)
    for row in board:
        for name in ("eccv/i2t_map_at_r", "eccv/t2i_map_at_r", "cxc/i2t_r1", "cxc/t2i_r1"):
            low, high = row.intervals[name]
            assert low < row.mean(name) < high


def test_score_command_adds_them_and_notes_other_ids(coco_layout, tmp_path, capsys) -> None:
    images, captions, owner, image_emb, text_emb = coco_layout
    paths = {name: tmp_path / f"{name}.npy" for name in ("I", "T", "o", "ii", "ci", "bad")}
    for name, value in (("I", image_emb), ("T", text_emb), ("o", owner), ("ii", images), ("ci", captions)):
        np.save(paths[name], np.asarray(value))
    common = ["score", "--image-embeddings", str(paths["I"]), "--text-embeddings", str(paths["T"])]
    common += ["--text-to-image", str(paths["o"])]
    notes: list[str] = []
    got = score_files(
        paths["I"],
        paths["T"],
        "coco5k",
        text_to_image=paths["o"],
        image_ids=paths["ii"],
        caption_ids=paths["ci"],
        notes=notes,
    )
    assert not notes and set(ECCV_METRIC_NAMES) <= set(got) and "rsum" in got
    bad = images.copy()
    bad[0] = 1  # not a COCO test image
    np.save(paths["bad"], bad)
    assert (
        main(
            [
                *common,
                "--protocol",
                "coco",
                "--image-ids",
                str(paths["bad"]),
                "--caption-ids",
                str(paths["ci"]),
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    assert "eccv/i2t_r1" not in out and "5k/rsum" in out
    assert err.count("\n") == 1 and err.startswith("xmodal-bench: note: ECCV Caption / CxC metrics left out")
    assert main([*common, "--protocol", "coco", "--image-ids", str(paths["ii"])]) == 2
    assert capsys.readouterr().err.startswith(
        "xmodal-bench: error: --image-ids and --caption-ids go together"
    )
    assert (
        main(
            [
                *common,
                "--protocol",
                "coco1k",
                "--image-ids",
                str(paths["ii"]),
                "--caption-ids",
                str(paths["ci"]),
            ]
        )
        == 2
    )
    assert "coco or coco5k" in capsys.readouterr().err


def test_stable_top_k_breaks_ties_by_index_like_a_stable_sort() -> None:
    generator = torch.Generator().manual_seed(3)
    scores = torch.randint(0, 4, (50, 30), generator=generator).float()
    for k in (1, 5, 29, 30):
        expected = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        assert torch.equal(topk.stable_top_k(scores, k)[1], expected)


def test_a_dataset_without_ids_or_of_another_size_gets_one_note() -> None:
    coco = get_protocol("coco")
    owner = torch.arange(20) // 4
    gallery = Gallery(owner, torch.eye(5, 8), torch.eye(8)[owner % 8])
    assert coco.id_metrics(gallery) == IdMetrics(
        note="ECCV Caption / CxC metrics left out: the dataset has no image and caption ids"
    )
    from dataclasses import replace

    found = coco.id_metrics(replace(gallery, image_ids=np.arange(5), caption_ids=np.arange(20)))
    assert found.metrics == found.per_query == {} and "not the COCO 5K test split" in found.note
    assert sys.modules["eccv_caption"]  # the package is a dependency, imported on use


def _tied_embeddings(seed: int, images: int, texts: int, dim: int):
    """Coarse values (many equal scores) and duplicated rows (exactly equal scores) on both sides."""
    g = torch.Generator().manual_seed(seed)
    image_emb = torch.randint(-2, 3, (images, dim), generator=g).float() / 4
    text_emb = torch.randint(-2, 3, (texts, dim), generator=g).float() / 4
    image_emb[1::7] = image_emb[0]  # duplicated rows
    text_emb[3::5] = text_emb[2]
    return image_emb, text_emb


def _naive_top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    return torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]


@pytest.mark.parametrize("kernel", [True, False])
@pytest.mark.parametrize("tile", [1, 37, 500, None])
@pytest.mark.parametrize(("seed", "images", "texts", "dim", "k_i2t", "k_t2i"), [
    (0, 40, 200, 6, 48, 19), (1, 3, 17, 4, 17, 3), (2, 90, 310, 16, 10, 12), (3, 1, 9, 3, 4, 1),
])  # fmt: skip
def test_both_directions_equal_a_full_stable_sort(
    monkeypatch, kernel, tile, seed, images, texts, dim, k_i2t, k_t2i
):
    if kernel and not topk.kernel_available():
        pytest.skip("no C compiler: the torch path is used")
    if tile is not None:
        monkeypatch.setattr(topk, "TILE_ELEMENTS", tile)
    if not kernel:
        monkeypatch.setattr(topk, "_kernel", lambda: None)
    image_emb, text_emb = _tied_embeddings(seed, images, texts, dim)
    scores = image_emb @ text_emb.T
    search = embedding_top_k(image_emb, text_emb)
    i2t, t2i = search.both(k_i2t, k_t2i)
    assert torch.equal(i2t, _naive_top_k(scores, min(k_i2t, texts)))
    assert torch.equal(t2i, _naive_top_k(scores.T, min(k_t2i, images)))
    # the one-direction search (the TopK callable) on some queries: the same rows
    some = torch.arange(0, images, 2)
    assert torch.equal(search("i2t", some, k_i2t), i2t[some])
    some = torch.arange(1, texts, 3)
    assert torch.equal(search("t2i", some, k_t2i), t2i[some])


def test_the_kernel_lists_equal_the_torch_path_on_realistic_scores(monkeypatch):
    """Unit embeddings, captions near their image: the kernel path and torch.topk agree."""
    if not topk.kernel_available():
        pytest.skip("no C compiler: the torch path is used")
    g = torch.Generator().manual_seed(5)
    image_emb = torch.nn.functional.normalize(torch.randn(300, 32, generator=g), dim=1)
    owner = torch.arange(1500) // 5
    text_emb = torch.nn.functional.normalize(image_emb[owner] + torch.randn(1500, 32, generator=g), dim=1)
    fast = topk.both_directions(image_emb, text_emb, 48, 19)
    slow = topk.torch_top_k(image_emb, text_emb, 48), topk.torch_top_k(text_emb, image_emb, 19)
    assert torch.equal(fast[0], slow[0]) and torch.equal(fast[1], slow[1])
