"""Bad input: CLI and config mistakes end with one clear line and exit 2 (no traceback); the
converters, fed hypothesis-generated malformed annotation files, never crash and never leave a
partial dataset. (tests/cli/test_cli_errors.py covers unknown methods, datasets, keys, bad types,
batch size 0, bad override syntax and missing or stale datasets; these are the rest.)"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamodules.converters.samples import write_sample
from datamodules.manifest import read_manifest
from xmodal_bench.cli import main

from .helpers import assert_one_line_error


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse exits by itself
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _bench(root: Path, out: Path, *extra: str) -> list[str]:
    params = ("train_images=64", "val_images=32", "test_images=48", "shard_images=8")
    return [
        "bench", "--data-root", str(root), "--runs-dir", str(out / "runs"), "--leaderboards-dir", str(out / "b"),
        "data.workers=0", *(f"data.synthetic.{p}" for p in params), *extra,
    ]  # fmt: skip


CONFIG_MISTAKES = [
    (["trainer.max_epochs=-1"], r"trainer.max_epochs must be at least 1"),
    (["trainer.max_epochs=1.5"], r"trainer.max_epochs: Value '1.5' .* could not be converted to Integer"),
    (["seed=abc"], r"seed: Value 'abc'"),
    (["data.eval_batch_size=0"], r"data.eval_batch_size must be positive"),
    (["data.workers=-1"], r"data.workers must be >= 0"),
    (["data.image_size=[0,64]"], r"data.image_size must be \[height, width\] > 0"),
    (["data.image_size=[64]"], r"data.image_size must be \[height, width\]"),
    (["optim.lr=-1"], r"optim.lr must be positive"),
    (["trainer.checkpoint_every_n_steps=-5"], r"trainer.checkpoint_every_n_steps must be >= 0"),
    (["data.on_error=ignore"], r"data.on_error='ignore'; choose error or skip"),
    (["eval.checkpoint=worst"], r"eval.checkpoint must be best or last"),
    (["eval.latency_top_k=0"], r"eval.latency_top_k must be at least 1"),
    (["eval.latency_queries=-1"], r"eval.latency_queries must be at least 1"),
    (["irra.mlm_weight=1"], r"Key 'irra' not in"),
]


@pytest.mark.parametrize(("extra", "pattern"), CONFIG_MISTAKES)
def test_config_mistakes(tmp_path, extra, pattern) -> None:
    code, _, err = _run(*_bench(tmp_path / "data", tmp_path, *extra))
    assert_one_line_error(code, err, pattern)


# Mistakes found only once the data and the model are there (the tiny fixture: quick to reach).
LATE_MISTAKES = [
    (["data.batch_size=4096"], r"320 captions cannot fill one batch of 4096; lower the batch size"),
    (
        ["backbone.pretrained=/nonexistent/w.pt"],
        r"pretrained='/nonexistent/w.pt' is neither a file nor a known tag",
    ),
    (["backbone.model=NoSuchNet"], r"unknown open_clip model 'NoSuchNet'"),
    (["data.test_split=nosuch"], r"dataset 'synth' has no split 'nosuch'"),
    (["trainer.precision=17"], r"trainer settings .*trainer.precision=17.*Precision '17' is invalid"),
    (["trainer.accelerator=tpu9"], r"trainer settings .*invalid accelerator name"),
]


@pytest.mark.parametrize(("extra", "pattern"), LATE_MISTAKES)
def test_mistakes_found_after_data_and_model(synth_root, tmp_path, extra, pattern) -> None:
    code, _, err = _run(*_bench(synth_root, tmp_path, *extra))
    assert_one_line_error(code, err, pattern)


def test_missing_and_unreadable_files(synth_root, tmp_path) -> None:
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    for argv, pattern in [
        (["eval", "--checkpoint", str(tmp_path / "none.ckpt")], r"checkpoint not found: .*none.ckpt"),
        (["eval", "--checkpoint", str(garbage)], r"garbage.ckpt: not a readable checkpoint"),
        (
            ["index", "build", "--checkpoint", str(tmp_path / "none.ckpt"), "--out", str(tmp_path / "i")],
            "not found",
        ),
        (["sweep", "--config", str(tmp_path / "none.yaml")], r"sweep file not found"),
        (["leaderboard", "--runs-dir", str(tmp_path / "none")], r"no runs folder"),
        (
            ["data", "convert", "coco", "--source", str(tmp_path / "none"), "--out", str(tmp_path / "o")],
            "does not exist",
        ),
    ]:
        code, _, err = _run(*argv)
        assert_one_line_error(code, err, pattern)
    # --resume over a damaged last.ckpt (an unfinished run's, in staging): one line, nothing started
    run_dir = tmp_path / "runs" / "_staging" / "synth" / "clip" / "x"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut short")
    code, _, err = _run(*_bench(synth_root, tmp_path, "run_id=x"), "--resume")
    assert_one_line_error(code, err, r"cannot resume from .*last.ckpt: unreadable checkpoint")


# ------------------------------------------------------------------------------------- converter fuzz

CONVERTERS = {
    "coco": {"train": 2, "restval": 1, "val": 1, "test": 1},
    "f30k": {"train": 2, "val": 1, "test": 1},
    "cuhk": {"train": 2, "val": 1, "test": 1},
    "icfg": {"train": 2, "test": 1},
    "rstp": {"train": 2, "val": 1, "test": 1},
    "jsonl": {"train": 2, "val": 1, "test": 1},
}
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 2**40) | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict[str, tuple[Path, Path, str]]:
    """Per converter: (source argument, annotation file, its original text)."""
    out = {}
    for name, sizes in CONVERTERS.items():
        sample = write_sample(name, tmp_path_factory.mktemp(name), sizes=sizes)
        source = sample.annotation if name == "jsonl" else sample.root
        out[name] = (source, sample.annotation, sample.annotation.read_text())
    return out


def _mutate(document, data: st.DataObject):
    """Replace or delete one node at a random path of a JSON document (the root included)."""
    parent, key, node = None, None, document
    for _ in range(data.draw(st.integers(0, 4), label="depth")):
        children = (
            list(node.items())
            if isinstance(node, dict)
            else list(enumerate(node))
            if isinstance(node, list)
            else []
        )
        if not children:
            break
        parent, (key, node) = node, children[data.draw(st.integers(0, len(children) - 1))]
    if parent is None:
        return data.draw(JSON, label="root")
    if data.draw(st.booleans(), label="delete"):
        del parent[key]
    else:
        parent[key] = data.draw(JSON, label="value")
    return document


def _malformed(original: str, jsonl: bool, data: st.DataObject) -> bytes:
    kind = data.draw(st.sampled_from(["mutate", "mutate", "truncate", "bytes"]), label="kind")
    if kind == "truncate":
        return original.encode()[: data.draw(st.integers(0, len(original) - 1))]
    if kind == "bytes":
        return data.draw(st.binary(max_size=64))
    if jsonl:
        lines = [json.loads(line) for line in original.splitlines()]
        index = data.draw(st.integers(0, len(lines) - 1))
        lines[index] = _mutate(lines[index], data)
        return "\n".join(json.dumps(line) for line in lines).encode()
    return json.dumps(_mutate(json.loads(original), data)).encode()


OUTCOMES: dict[str, int] = {}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(data=st.data())
def test_fuzzed_annotations_never_crash_or_leave_a_partial_dataset(sources, tmp_path_factory, data) -> None:
    name = data.draw(st.sampled_from(sorted(CONVERTERS)), label="converter")
    source, annotation, original = sources[name]
    annotation.write_bytes(_malformed(original, name == "jsonl", data))
    out = tmp_path_factory.mktemp("out")
    code, _, err = _run("data", "convert", name, "--source", str(source), "--out", str(out))
    dataset = out / name
    if code == 0:  # the mutation happened to be harmless: then the dataset is complete and valid
        read_manifest(out, name, verify=True)
    else:
        assert_one_line_error(code, err, r"xmodal-bench: error: .*")
        assert not (dataset / "manifest.json").exists()
        assert not [p.name for p in out.iterdir()], "a partial dataset was left behind"
    OUTCOMES[str(code)] = OUTCOMES.get(str(code), 0) + 1


def test_fuzz_mostly_produced_errors() -> None:
    # runs after the fuzz test in the same process (pytest keeps file order within a worker), else vacuous
    if OUTCOMES:
        assert OUTCOMES.get("2", 0) >= OUTCOMES.get("0", 0), OUTCOMES
