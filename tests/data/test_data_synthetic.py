"""Synthetic sets: determinism, staleness, identities, and captions that really describe the images."""

from __future__ import annotations

import io
import json
import re
from collections import Counter

import numpy as np
import pytest
import webdataset as wds
from PIL import Image

import datamodules.synthetic_sets as synthetic
from datamodules.manifest import read_manifest
from datamodules.synthetic import BACKGROUNDS, COLOURS, KINDS, POSITIONS, SIZES
from datamodules.synthetic_sets import ensure_synthetic, generate_synthetic
from xmodal_bench.errors import UserError

TINY = {"train_images": 6, "val_images": 4, "test_images": 5, "shard_images": 4}


def _samples(root, dataset, split):
    paths = sorted(str(p) for p in (root / dataset / split).glob("*.tar"))
    return list(wds.WebDataset(paths, shardshuffle=False, nodesplitter=None, workersplitter=None))


def _tars(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.tar"))}


def test_generation_is_deterministic_and_splits_are_independent(tmp_path):
    a = generate_synthetic("synth", tmp_path / "a", progress=False, **TINY)
    b = generate_synthetic("synth", tmp_path / "b", progress=False, **TINY)
    assert _tars(a) == _tars(b)
    ma, mb = read_manifest(tmp_path / "a", "synth"), read_manifest(tmp_path / "b", "synth")
    assert {k: v for k, v in ma.items() if k != "command"} == {k: v for k, v in mb.items() if k != "command"}
    c = generate_synthetic("synth", tmp_path / "c", progress=False, seed=1, **TINY)
    assert _tars(c) != _tars(a)
    # a bigger train split leaves val and test unchanged
    d = generate_synthetic("synth", tmp_path / "d", progress=False, **{**TINY, "train_images": 9})
    assert {k: v for k, v in _tars(d).items() if not k.startswith("train")} == {
        k: v for k, v in _tars(a).items() if not k.startswith("train")
    }


def test_ensure_synthetic_regenerates_only_when_stale(tmp_path, monkeypatch):
    calls = []
    real = synthetic.generate_synthetic

    def counting(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(synthetic, "generate_synthetic", counting)
    ensure = lambda **kw: ensure_synthetic(tmp_path, "synth", progress=False, **{**TINY, **kw})  # noqa: E731
    ensure()
    ensure()
    assert len(calls) == 1  # cached
    ensure(captions_per_image=3)
    assert len(calls) == 2  # other parameters
    ensure(captions_per_image=3)
    assert len(calls) == 2
    ensure(captions_per_image=3, seed=4)
    assert len(calls) == 3  # other seed
    manifest_path = tmp_path / "synth" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["generator"]["version"] = -1
    manifest_path.write_text(json.dumps(manifest))
    ensure(captions_per_image=3, seed=4)
    assert len(calls) == 4  # other generator version
    next((tmp_path / "synth" / "test").glob("*.tar")).unlink()
    ensure(captions_per_image=3, seed=4)
    assert len(calls) == 5  # incomplete
    manifest_path.unlink()
    ensure(captions_per_image=3, seed=4)
    assert len(calls) == 6  # missing manifest
    read_manifest(tmp_path, "synth", verify=True)


def test_unknown_parameter_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match=r"unknown synth parameter.*known: .*train_images"):
        generate_synthetic("synth", tmp_path, train_image=3)
    with pytest.raises(UserError, match="unknown synthetic dataset"):
        generate_synthetic("synth3d", tmp_path)


def test_synth_manifest(synth_root):
    m = read_manifest(synth_root, "synth")
    assert (
        m["protocol"] == "caption"
        and m["command"] == f"xmodal-bench data synth --name synth --out {synth_root}"
    )
    assert [(s["images"], s["captions"], s["identities"]) for s in m["splits"].values()] == [
        (64, 320, None),
        (32, 160, None),
        (48, 240, None),
    ]
    assert [len(s["shards"]) for s in m["splits"].values()] == [8, 4, 6]
    assert m["generator"]["name"] == "synth" and m["generator"]["params"]["train_images"] == 64
    assert 0 < m["source"]["oracle_t2i_r1"]["test"] < 100  # not trivially solvable


def _synonyms(vocab):
    return {word: canon for canon, *rest in vocab for word in rest[-1]}


COLOUR_WORDS = _synonyms(COLOURS)
KIND_WORDS = _synonyms(KINDS)
POSITION_WORDS = _synonyms(POSITIONS)
SIZE_WORDS = _synonyms(SIZES)


def _find(text, words):
    """Canonical values of the vocabulary phrases in `text` (longest phrases first, no overlaps)."""
    found = []
    for phrase in sorted(words, key=len, reverse=True):
        pattern = rf"\b{re.escape(phrase)}\b"
        found += [words[phrase]] * len(re.findall(pattern, text))
        text = re.sub(pattern, " ", text)
    return found


def _truth(source):
    _, bg, shapes = source.split("|")
    rows = [s.split(" ") for s in shapes.split(";")]
    return bg[3:], [{"colour": r[0], "kind": r[1], "size": r[2], "position": " ".join(r[3:])} for r in rows]


def test_synth_captions_describe_the_image_partially(synth_root):
    samples = _samples(synth_root, "synth", "test")
    complete, vocabulary = 0, Counter()
    n_captions = 0
    for s in samples:
        meta = json.loads(s["json"])
        bg, shapes = _truth(meta["source"])
        assert len(meta["captions"]) == 5 and s["txt"].decode().split("\n") == meta["captions"]
        for caption in meta["captions"]:
            n_captions += 1
            colours = _find(caption, COLOUR_WORDS)
            kinds = _find(caption, KIND_WORDS)
            positions = _find(caption, POSITION_WORDS)
            sizes = _find(caption, SIZE_WORDS)
            assert set(colours) <= {x["colour"] for x in shapes}, (caption, shapes)
            assert set(kinds) <= {x["kind"] for x in shapes}, (caption, shapes)
            assert set(positions) <= {x["position"] for x in shapes}, (caption, shapes)
            assert set(sizes) <= {x["size"] for x in shapes}, (caption, shapes)
            assert colours or kinds
            if "background" in caption:
                assert any(w in caption for w in dict(BACKGROUNDS)[bg])
            complete += all(len(found) == len(shapes) for found in (colours, kinds, positions, sizes))
            vocabulary.update(re.findall(r"[a-z]+", caption))
    assert complete < 0.5 * n_captions  # most captions leave something out
    for a, b in [("circle", "disk"), ("large", "big"), ("upper", "top")]:
        assert vocabulary[a] and vocabulary[b], (a, b)  # paraphrased


def test_synth_pixels_show_the_described_colours(synth_root):
    size = 64
    cell = size / 3
    checked = 0
    for s in _samples(synth_root, "synth", "val"):
        bg, shapes = _truth(json.loads(s["json"])["source"])
        if bg == "noisy":
            continue
        pixels = np.asarray(Image.open(io.BytesIO(s["jpg"])).convert("RGB"), dtype=np.int32)
        for shape in shapes:
            if shape["colour"] in ("white", "black"):
                continue
            pos = [p[0] for p in POSITIONS].index(shape["position"])
            r, c = divmod(pos, 3)
            patch = pixels[int(r * cell) : int((r + 1) * cell), int(c * cell) : int((c + 1) * cell)]
            rgb = np.array(dict((n, v) for n, v, _ in COLOURS)[shape["colour"]])
            close = (np.abs(patch - rgb).max(axis=2) < 50).sum()
            assert close >= 8, (shape, close)
            checked += 1
    assert checked >= 10


REID_PATTERNS = {
    "top": r"(\w+) (?:shirt|top|jacket|t-shirt|sweater)\b",
    "shoes": r"(\w+) (?:shoes|sneakers)\b",
    "hat": r"(\w+) (?:hat|cap)\b",
}


def test_synth_reid_identities_and_captions(synth_root):
    m = read_manifest(synth_root, "synth_reid")
    assert m["protocol"] == "person"
    pids = {}
    for split in ("train", "val", "test"):
        samples = _samples(synth_root, "synth_reid", split)
        metas = [json.loads(s["json"]) for s in samples]
        pids[split] = Counter(meta["pid"] for meta in metas)
        assert set(pids[split].values()) == {3}  # images per identity
        assert m["splits"][split]["identities"] == len(pids[split])
        truth_by_pid = {}
        for s, meta in zip(samples, metas, strict=True):
            assert Image.open(io.BytesIO(s["jpg"])).size == (32, 96)  # stored 96 high, 32 wide
            truth = dict(kv.split("=") for kv in meta["source"].split("|")[1:])
            assert truth_by_pid.setdefault(meta["pid"], truth) == truth  # attributes fixed per identity
            assert len(meta["captions"]) == 2
            for caption in meta["captions"]:
                for attr, pattern in REID_PATTERNS.items():
                    for word in re.findall(pattern, caption):
                        if word not in ("a", "no"):
                            assert word == truth[attr], (caption, truth)
                if re.search(r"\b(backpack|rucksack)\b", caption):
                    assert truth["bag"] == "backpack"
                if re.search(r"\b(handbag|small bag)\b", caption):
                    assert truth["bag"] == "handbag"
                if "no bag" in caption:
                    assert truth["bag"] == "none"
                if "no hat" in caption or "without a hat" in caption:
                    assert truth["hat"] == "none"
        assert len(truth_by_pid) == len({tuple(sorted(t.items())) for t in truth_by_pid.values()})
    assert sorted(pids["train"]) == list(range(12))  # contiguous train ids
    assert not set(pids["train"]) & set(pids["val"]) and not set(pids["val"]) & set(pids["test"])
    assert not set(pids["train"]) & set(pids["test"])
    assert 0 < m["source"]["oracle_r1"]["test"] < 100
