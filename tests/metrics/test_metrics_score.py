"""`xmodal-bench score` logic: .npy files in, metrics out; every bad input is one UserError."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from xmodal_bench.commands.score import add_arguments, run
from xmodal_bench.errors import UserError
from xmodal_bench.metrics.score import score_files

from .naive import naive_caption_retrieval, naive_coco_1k, naive_person


def unit_rows(rng: np.random.Generator, rows: int, dim: int = 16) -> np.ndarray:
    """Rows with four entries of +-1/2 and zeros elsewhere: unit norm exactly, so L2-normalising
    changes nothing and every dot product (a multiple of 1/4) is exact."""
    out = np.zeros((rows, dim), dtype=np.float32)
    for r in range(rows):
        out[r, rng.choice(dim, 4, replace=False)] = rng.choice([-0.5, 0.5], 4)
    return out


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    paths = {
        "images": tmp_path / "images.npy",
        "texts": tmp_path / "texts.npy",
        "owner": tmp_path / "owner.npy",
        "image_pids": tmp_path / "image_pids.npy",
        "text_pids": tmp_path / "text_pids.npy",
    }
    images, texts = unit_rows(rng, 12), unit_rows(rng, 36)
    np.save(paths["images"], images)
    np.save(paths["texts"], texts * 3.0)  # scaled: normalisation must undo it
    np.save(paths["owner"], rng.permutation(np.arange(36) % 12))
    np.save(paths["image_pids"], np.arange(12) // 2)
    np.save(paths["text_pids"], rng.integers(0, 6, 36).astype(np.int32))
    return paths, images, texts


def test_caption_default_grouping_and_explicit_owner(files):
    paths, images, texts = files
    got = score_files(paths["images"], paths["texts"], "caption")
    owner = np.arange(36) // 3
    assert got == pytest.approx(
        naive_caption_retrieval(torch.from_numpy(images), torch.from_numpy(texts), owner)
    )
    explicit_owner = np.load(paths["owner"])
    got = score_files(paths["images"], paths["texts"], "coco5k", text_to_image=paths["owner"], chunk_size=5)
    expected = naive_caption_retrieval(torch.from_numpy(images), torch.from_numpy(texts), explicit_owner)
    assert got == pytest.approx(expected)
    one_k = score_files(paths["images"], paths["texts"], "coco1k", text_to_image=paths["owner"])
    assert one_k == pytest.approx(
        naive_coco_1k(torch.from_numpy(images), torch.from_numpy(texts), explicit_owner)
    )
    both = score_files(paths["images"], paths["texts"], "coco", text_to_image=paths["owner"])
    assert {k[3:]: v for k, v in both.items() if k.startswith("5k/")} == pytest.approx(expected)
    assert {k[3:]: v for k, v in both.items() if k.startswith("1k/")} == pytest.approx(one_k)


def test_person(files):
    paths, images, texts = files
    got = score_files(
        paths["images"],
        paths["texts"],
        "person",
        image_pids=paths["image_pids"],
        text_pids=paths["text_pids"],
    )
    expected, _ = naive_person(
        torch.from_numpy(texts) @ torch.from_numpy(images).T, np.load(paths["text_pids"]), np.arange(12) // 2
    )
    assert got == pytest.approx(expected)


def test_run_prints_json_and_writes_out_atomically(files, tmp_path, capsys):
    paths, _, _ = files
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "results" / "metrics.json"
    args = parser.parse_args(
        ["--image-embeddings", str(paths["images"]), "--text-embeddings", str(paths["texts"]),
         "--protocol", "coco5k", "--out", str(out), "--chunk-size", "4"]
    )  # fmt: skip
    assert run(args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert set(printed) >= {"i2t_r1", "t2i_r10", "rsum"}
    assert [p.name for p in out.parent.iterdir()] == ["metrics.json"]  # no temp file left behind
    with pytest.raises(SystemExit):
        parser.parse_args(["--image-embeddings", "a", "--text-embeddings", "b", "--protocol", "x"])


def save(tmp_path, name, array):
    path = tmp_path / name
    np.save(path, array)
    return path


def test_bad_inputs_are_user_errors(files, tmp_path):
    paths, images, _ = files
    img, txt = paths["images"], paths["texts"]
    not_npy = tmp_path / "junk.npy"
    not_npy.write_text("hello")
    npz = tmp_path / "arr.npz"
    np.savez(npz, a=images)
    nan = images.copy()
    nan[3, 2] = np.nan
    zero = images.copy()
    zero[1] = 0
    owner = np.arange(36) // 3
    orphan = owner.copy()
    orphan[orphan == 4] = 5
    cases = [
        (dict(image_embeddings=tmp_path / "missing.npy"), "not found"),
        (dict(image_embeddings=not_npy), "not a readable .npy"),
        (dict(image_embeddings=npz), ".npz"),
        (dict(image_embeddings=save(tmp_path, "i3.npy", images[None])), "must be 2-D"),
        (dict(text_embeddings=save(tmp_path, "t8.npy", np.ones((36, 8), dtype=np.float32))), "dim"),
        (dict(image_embeddings=save(tmp_path, "iint.npy", np.ones((12, 16), dtype=np.int64))), "floating"),
        (dict(image_embeddings=save(tmp_path, "inan.npy", nan)), "NaN"),
        (dict(image_embeddings=save(tmp_path, "izero.npy", zero)), "all-zero"),
        (dict(image_embeddings=save(tmp_path, "i7.npy", images[:7])), "grouped evenly"),
        (dict(protocol="flickr"), "unknown protocol"),
        (dict(text_to_image=save(tmp_path, "o_float.npy", owner.astype(np.float32))), "integers"),
        (dict(text_to_image=save(tmp_path, "o_2d.npy", owner[None])), "1-D"),
        (dict(text_to_image=save(tmp_path, "o_short.npy", owner[:30])), "30 entries"),
        (dict(text_to_image=save(tmp_path, "o_range.npy", owner + 1)), "indices in"),
        (dict(text_to_image=save(tmp_path, "o_neg.npy", owner - 1)), "indices in"),
        (dict(text_to_image=save(tmp_path, "o_orphan.npy", orphan)), "no caption"),
        (dict(text_to_image=save(tmp_path, "o_bool.npy", owner > 3)), "integers"),
        (dict(protocol="person", image_pids=paths["image_pids"]), "needs both"),
        (dict(protocol="person", text_pids=paths["text_pids"]), "needs both"),
        (dict(image_pids=paths["image_pids"], text_pids=paths["text_pids"]), "for --protocol person"),
        (
            dict(
                protocol="person",
                image_pids=paths["image_pids"],
                text_pids=save(tmp_path, "tp.npy", np.full(36, 99)),
            ),
            "36 of 36 text queries have no gallery image",
        ),
        (
            dict(
                protocol="person",
                image_pids=save(tmp_path, "ip.npy", np.arange(11)),
                text_pids=paths["text_pids"],
            ),
            "11 entries",
        ),
        (dict(protocol="coco1k", image_embeddings=save(tmp_path, "i4.npy", images[:4])), "at least 5 images"),
    ]
    for overrides, message in cases:
        kwargs = dict(image_embeddings=img, text_embeddings=txt, protocol="caption") | overrides
        with pytest.raises(UserError, match=message) as info:
            score_files(**kwargs)
        assert "\n" not in str(info.value), overrides
