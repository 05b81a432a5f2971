"""A hostile or careless user: a table of bad inputs and faults against every subcommand.

Each case runs the CLI in process and asserts what the README promises: exit status 2, one line
on stderr, no traceback, and nothing that existed before lost or half-written (a finished run, its
results and its leaderboard stay byte for byte; no stray run folder appears). Pickle payloads that
would create a marker file are handed to every entry point that reads a checkpoint or weights
file: the marker must never appear. Hypothesis fuzzes `key=value` overrides and `score` inputs.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xmodal_bench.cli import main
from xmodal_bench.errors import UserError

pytestmark = pytest.mark.slow

SIZES = ("train_images=32", "val_images=8", "test_images=16", "shard_images=8")


class Payload:
    """Unpickling this runs `os.system(touch MARKER)`: what a hostile checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:  # argparse exits by itself
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (but logs, locks and wandb's offline files) with its bytes."""
    if not folder.exists():
        return {}
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "_locks" not in p.parts and "wandb" not in p.parts
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """One finished tiny CLIP run (its folder, checkpoint, leaderboard), payloads and a search index."""
    base = tmp_path_factory.mktemp("hostile")
    os.environ["WANDB_MODE"] = "disabled"
    data, runs = base / "data", base / "runs"
    bench = [
        "bench", "--method", "clip", "--data", "synth", "--data-root", data, "--runs-dir", runs,
        "--max-epochs", "1", "data.workers=0", "data.batch_size=16", "eval.latency_queries=5",
        "backbone.pretrained=none", *(f"data.synthetic.{s}" for s in SIZES),
    ]  # fmt: skip
    code, _, err = _run(*bench)
    assert code == 0, err
    (results,) = runs.glob("synth/clip/*/results.json")
    run_dir = results.parent
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    index = base / "index"
    code, _, err = _run("index", "build", "--checkpoint", checkpoint, "--out", index, "--data-root", data)
    assert code == 0, err
    marker = base / "PWNED"
    payload = base / "payload.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"config": Payload(marker)}}, payload)
    state = torch.load(checkpoint, weights_only=True)
    return {
        "base": base, "data": data, "runs": runs, "run_dir": run_dir, "checkpoint": checkpoint,
        "index": index, "marker": marker, "payload": payload, "bench": [str(a) for a in bench], "state": state,
    }  # fmt: skip


def _file(world, name: str, content: bytes | str) -> Path:
    path = world["base"] / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def _npy(world, name: str, array: np.ndarray) -> Path:
    path = world["base"] / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, array)
    return path


def _checkpoint_with(world, name: str, change) -> Path:
    state = json.loads(json.dumps({"config": world["state"]["hyper_parameters"]["config"]}))
    weights = dict(world["state"]["state_dict"])
    change(state["config"], weights)
    path = world["base"] / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": weights, "hyper_parameters": state, "global_step": 1}, path)
    return path


def _index_copy(world, name: str, change) -> Path:
    folder = world["base"] / "inputs" / name
    shutil.copytree(world["index"], folder)
    change(folder)
    return folder


def _write_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def _sweep(world, name: str, text: str | bytes) -> Path:
    return _file(world, f"{name}.yaml", text)


def _bench(world, *extra: str) -> list[str]:
    return [*world["bench"], *extra]


def _images(world) -> Path:
    return _npy(world, "images.npy", np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32))


def _texts(world) -> Path:
    return _npy(world, "texts.npy", np.random.default_rng(1).standard_normal((20, 8)).astype(np.float32))


# (case id, argv builder(world) -> argv, pattern of the one error line)
CASES = [
    # --- the command line itself (argparse; answered without training anything)
    ("no command", lambda w: [], r"the following arguments are required: command"),
    ("unknown command", lambda w: ["train"], r"invalid choice: 'train'"),
    ("devices not a number", lambda w: ["bench", "--devices", "two"], r"number of devices"),
    ("devices zero", lambda w: ["bench", "--devices", "0"], r"number of devices must be at least 1"),
    ("seed not an integer", lambda w: ["bench", "--seed", "x"], r"expected an integer"),
    ("epochs zero", lambda w: ["bench", "--max-epochs", "0"], r"expected a positive integer"),
    ("unknown scale", lambda w: ["bench", "--scale", "huge"], r"invalid choice: 'huge'"),
    ("unknown flag", lambda w: ["bench", "--sed", "3"], r"unrecognized arguments: --sed"),
    ("stray positional", lambda w: ["score", "extra"], r"required|unrecognized"),
    ("score without files", lambda w: ["score", "--protocol", "coco"], r"required: --image-embeddings"),
    ("score unknown protocol", lambda w: ["score", "--image-embeddings", "a", "--text-embeddings", "b", "--protocol", "x"], r"invalid choice: 'x'"),
    ("index without action", lambda w: ["index"], r"required: index_command"),
    ("search without query", lambda w: ["index", "search", w["index"]], r"one of the arguments --text --image is required"),
    ("sweep without config", lambda w: ["sweep"], r"required: --config"),
    ("eval without checkpoint", lambda w: ["eval"], r"required: --checkpoint"),
    ("convert unknown format", lambda w: ["data", "convert", "imagenet", "--source", "x"], r"invalid choice: 'imagenet'"),
    ("synth unknown set", lambda w: ["data", "synth", "--name", "mnist"], r"invalid choice: 'mnist'"),
    # --- composing the run config (before any data or model work)
    ("unknown method", lambda w: _bench(w, "--method", "nosuch"), r"unknown method 'nosuch'"),
    ("plugin as a base", lambda w: _bench(w, "--method", "bcls"), r"bcls is a plugin"),
    ("unknown plugin", lambda w: _bench(w, "--method", "clip+foo"), r"unknown plugin 'foo'"),
    ("unknown dataset", lambda w: _bench(w, "--data", "nosuch"), r"unknown dataset 'nosuch'"),
    ("unknown key", lambda w: _bench(w, "optim.lrr=1"), r"optim.lrr"),
    ("unknown section", lambda w: _bench(w, "tgdt.margin=0.1"), r"Key 'tgdt' not in"),
    ("wrong type", lambda w: _bench(w, "trainer.max_epochs=many"), r"trainer.max_epochs"),
    ("override without value", lambda w: _bench(w, "optim.lr"), r"bad override 'optim.lr'"),
    ("override with a bad key", lambda w: _bench(w, "optim..lr=1"), r"bad override"),
    ("yaml tag", lambda w: _bench(w, "optim.lr=!!python/object/apply:os.system [touch x]"), r"not a plain value"),
    ("interpolation", lambda w: _bench(w, "run_id=${oc.env:HOME}"), r"interpolations"),
    ("negative seed", lambda w: _bench(w, "--seed", "-1"), r"seed=-1 must be in 0"),
    ("seed out of range", lambda w: _bench(w, "--seed", str(2**40)), r"must be in 0\.\.4294967295"),
    ("batch of one", lambda w: _bench(w, "data.batch_size=1"), r"data.batch_size must be at least 2"),
    ("lr zero", lambda w: _bench(w, "optim.lr=0"), r"optim.lr must be positive"),
    ("betas out of range", lambda w: _bench(w, "optim.betas=[0.9,1.5]"), r"optim.betas"),
    ("unknown schedule", lambda w: _bench(w, "optim.schedule=linear"), r"optim.schedule='linear'"),
    ("negative warmup steps", lambda w: _bench(w, "optim.warmup_steps=-3"), r"optim.warmup_steps must be >= 0"),
    ("unknown augment", lambda w: _bench(w, "data.augment=mixup"), r"data.augment='mixup'"),
    ("unknown interpolation", lambda w: _bench(w, "data.interpolation=nearest"), r"data.interpolation='nearest'"),
    ("unknown protocol", lambda w: _bench(w, "data.protocol=ranking"), r"data.protocol='ranking'"),
    ("tgdt dropout 5", lambda w: _bench(w, "--method", "tgdt", "tgdt.dropout=5"), r"tgdt.dropout=5"),
    ("tgdt shortlist 0", lambda w: _bench(w, "--method", "tgdt", "tgdt.k_t2i=0"), r"tgdt.k_t2i"),
    ("tgdt word reduction", lambda w: _bench(w, "--method", "tgdt", "tgdt.word_reduction=max"), r"word reduction 'max'"),
    ("irra mask prob 2", lambda w: _bench(w, "--method", "irra", "irra.mask_prob=2"), r"irra.mask_prob=2"),
    ("irra unknown loss", lambda w: _bench(w, "--method", "irra", "irra.losses=[sdm,itc]"), r"unknown loss 'itc'"),
    ("irra fractions", lambda w: _bench(w, "--method", "irra", "irra.mask_fraction=0.95"), r"at most 1"),
    ("aladin margin", lambda w: _bench(w, "--method", "aladin", "aladin.margin=-1"), r"aladin.margin must be >= 0"),
    ("aladin index backend", lambda w: _bench(w, "--method", "aladin", "aladin.index.backend=annoy"), r"unknown index backend 'annoy'"),
    ("bcls window", lambda w: _bench(w, "--method", "clip+bcls", "bcls.window=0"), r"bcls.window must be >= 1"),
    ("bcls provider", lambda w: _bench(w, "--method", "clip+bcls", "bcls.provider=bm25"), r"bcls.provider='bm25'"),
    ("run id is a path", lambda w: _bench(w, f"run_id={w['base'] / 'elsewhere'}"), r"a run id is one folder name"),
    ("run id climbs out", lambda w: _bench(w, "run_id=../../x"), r"a run id is one folder name"),
    ("eval checkpoint choice", lambda w: _bench(w, "eval.checkpoint=worst"), r"eval.checkpoint must be best or last"),
    # --- trainer settings (Lightning's judgement, before data or wandb)
    ("precision", lambda w: _bench(w, "trainer.precision=17"), r"trainer settings .*Precision '17' is invalid"),
    ("accelerator", lambda w: _bench(w, "trainer.accelerator=tpu9"), r"trainer settings .*accelerator"),
    ("strategy", lambda w: _bench(w, "trainer.strategy=nope"), r"trainer settings .*strategy"),
    ("batch not divisible", lambda w: _bench(w, "trainer.accelerator=cpu", "trainer.devices=3", "data.batch_size=16"), r"global batch and cannot be split evenly over 3 devices"),
    # --- data
    ("dataset not converted", lambda w: _bench(w, "--data", "f30k"), r"no dataset 'f30k' .*convert it first"),
    ("synthetic size", lambda w: _bench(w, "data.synthetic.train_images=-5"), r"split sizes must be >= 0"),
    ("synthetic unknown knob", lambda w: _bench(w, "data.synthetic.colours=3"), r"unknown synth parameter"),
    # --- files: checkpoints and weights (payloads never run)
    ("eval missing checkpoint", lambda w: ["eval", "--checkpoint", w["base"] / "none.ckpt"], r"checkpoint not found"),
    ("eval garbage checkpoint", lambda w: ["eval", "--checkpoint", _file(w, "garbage.ckpt", b"junk")], r"not a readable checkpoint"),
    ("eval payload", lambda w: ["eval", "--checkpoint", w["payload"]], r"refused to load this checkpoint: it asks to build the Python object posix.system"),
    ("eval foreign torch file", lambda w: ["eval", "--checkpoint", _torch_file(w, "foreign.pt", {"weights": torch.zeros(2)})], r"not an xmodal-bench checkpoint"),
    ("eval checkpoint of an unknown method", lambda w: ["eval", "--checkpoint", _checkpoint_with(w, "unknown.ckpt", lambda c, s: c.update(method="nosuch"))], r"unknown method 'nosuch'"),
    ("eval checkpoint with an unknown key", lambda w: ["eval", "--checkpoint", _checkpoint_with(w, "key.ckpt", lambda c, s: c["optim"].update(lrr=1))], r"saved run config does not fit: .*lrr"),
    ("eval checkpoint of another shape", lambda w: ["eval", "--checkpoint", _checkpoint_with(w, "shape.ckpt", lambda c, s: s.update({"backbone.model.visual.proj": torch.zeros(3, 3)}))], r"its weights do not fit method 'clip'"),
    ("eval --out is a file", lambda w: ["eval", "--checkpoint", w["checkpoint"], "--out", _file(w, "out.txt", "keep me")], r"--out .* is a file"),
    ("eval on an unknown dataset", lambda w: ["eval", "--checkpoint", w["checkpoint"], "--data", "nosuch"], r"unknown dataset 'nosuch'"),
    ("index build payload", lambda w: ["index", "build", "--checkpoint", w["payload"], "--out", w["base"] / "i2"], r"refused to load"),
    ("index build over a file", lambda w: ["index", "build", "--checkpoint", w["checkpoint"], "--out", _file(w, "notindex", "x")], r"exists and is not a search index"),
    ("search payload through meta.json", lambda w: ["index", "search", _index_copy(w, "ix-payload", lambda f: _write_json(f / "meta.json", lambda m: m.update(checkpoint=str(w["payload"])))), "--text", "red"], r"refused to load"),
    ("search missing index", lambda w: ["index", "search", w["base"] / "noindex", "--text", "a"], r"no index at"),
    ("search truncated meta", lambda w: ["index", "search", _index_copy(w, "ix-meta", lambda f: (f / "meta.json").write_text('{"format": 1, "chec')), "--text", "a"], r"not readable JSON"),
    ("search meta of another format", lambda w: ["index", "search", _index_copy(w, "ix-format", lambda f: _write_json(f / "meta.json", lambda m: m.update(format=9))), "--text", "a"], r"format 9, expected 1"),
    ("search meta missing a field", lambda w: ["index", "search", _index_copy(w, "ix-field", lambda f: _write_json(f / "meta.json", lambda m: m.pop("captions"))), "--text", "a"], r"field 'captions' is missing"),
    ("search truncated vectors", lambda w: ["index", "search", _index_copy(w, "ix-vectors", _truncate_vectors), "--text", "a"], r"damaged index|not a readable|rebuild"),
    ("search rows do not match", lambda w: ["index", "search", _index_copy(w, "ix-rows", lambda f: _write_json(f / "meta.json", lambda m: m.update(images=m["images"][:-1]))), "--text", "a"], r"rows but meta.json lists|names an image outside"),
    ("search empty text", lambda w: ["index", "search", w["index"], "--text", "  "], r"--text is empty"),
    ("search unreadable image", lambda w: ["index", "search", w["index"], "--image", _file(w, "photo.png", b"not an image")], r"cannot read image"),
    ("pretrained missing file", lambda w: _bench(w, "backbone.pretrained=/nonexistent/weights.pt"), r"neither a file nor a known tag"),
    ("pretrained payload", lambda w: _bench(w, f"backbone.pretrained={w['payload']}"), r"refused to load this weights file"),
    ("pretrained garbage", lambda w: _bench(w, f"backbone.pretrained={_file(w, 'garbage.pt', b'junk')}"), r"cannot read weights file"),
    ("pretrained another model's weights", lambda w: _bench(w, "backbone.model=ViT-B-32", "backbone.pretrained=synthclip"), r"holds weights of xmb-tiny, not ViT-B-32"),
    ("warm start without a source", lambda w: _bench(w, "--method", "irra", "--seed", "5", "backbone.pretrained=run:clip"), r"no finished clip run"),
    ("resume from a payload", lambda w: _resume_with(w, w["payload"]), r"cannot resume: .*refused to load"),
    ("resume from a truncated checkpoint", lambda w: _resume_with(w, _file(w, "cut.ckpt", b"PK\x03\x04 cut")), r"cannot resume from .*unreadable checkpoint"),
    # --- score inputs
    ("score missing file", lambda w: ["score", "--image-embeddings", w["base"] / "no.npy", "--text-embeddings", _texts(w), "--protocol", "caption"], r"image embeddings file not found"),
    ("score not npy", lambda w: ["score", "--image-embeddings", _file(w, "x.npy", b"junk"), "--text-embeddings", _texts(w), "--protocol", "caption"], r"not a readable .npy array"),
    ("score npz", lambda w: ["score", "--image-embeddings", _npz(w), "--text-embeddings", _texts(w), "--protocol", "caption"], r"an .npz archive"),
    ("score 1-D", lambda w: ["score", "--image-embeddings", _npy(w, "flat.npy", np.ones(4, np.float32)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"must be 2-D"),
    ("score integers", lambda w: ["score", "--image-embeddings", _npy(w, "int.npy", np.ones((4, 8), np.int64)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"must be floating point"),
    ("score float128", lambda w: ["score", "--image-embeddings", _npy(w, "f128.npy", np.ones((4, 8), np.longdouble)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"float16, float32 or float64"),
    ("score NaN", lambda w: ["score", "--image-embeddings", _npy(w, "nan.npy", np.full((4, 8), np.nan, np.float32)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"NaN or infinite"),
    ("score zero row", lambda w: ["score", "--image-embeddings", _npy(w, "zero.npy", np.zeros((4, 8), np.float32)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"all-zero rows"),
    ("score header claims 10^12 rows", lambda w: ["score", "--image-embeddings", _huge_header(w), "--text-embeddings", _texts(w), "--protocol", "caption"], r"not a readable .npy array|claims"),
    ("score dimension mismatch", lambda w: ["score", "--image-embeddings", _npy(w, "d4.npy", np.ones((4, 4), np.float32)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"dim 4 but text embeddings have dim 8"),
    ("score uneven grouping", lambda w: ["score", "--image-embeddings", _npy(w, "i3.npy", np.ones((3, 8), np.float32)), "--text-embeddings", _texts(w), "--protocol", "caption"], r"cannot be grouped evenly"),
    ("score owner of the wrong length", lambda w: ["score", "--image-embeddings", _images(w), "--text-embeddings", _texts(w), "--protocol", "caption", "--text-to-image", _npy(w, "owner.npy", np.zeros(3, np.int64))], r"has 3 entries but there are 20"),
    ("score person without pids", lambda w: ["score", "--image-embeddings", _images(w), "--text-embeddings", _texts(w), "--protocol", "person"], r"needs both --image-pids and --text-pids"),
    ("score --out under a file", lambda w: ["score", "--image-embeddings", _images(w), "--text-embeddings", _texts(w), "--protocol", "caption", "--out", _file(w, "parent", "x") / "m.json"], r"Not a directory|File exists"),
    # --- sweeps and leaderboards
    ("leaderboard without runs", lambda w: ["leaderboard", "--runs-dir", w["base"] / "noruns"], r"no runs folder"),
    ("leaderboard unknown dataset", lambda w: ["leaderboard", "--runs-dir", w["runs"], "--out", w["base"] / "lb", "--data", "nosuch"], r"no results for dataset 'nosuch'"),
    ("sweep missing file", lambda w: ["sweep", "--config", w["base"] / "none.yaml"], r"sweep file not found"),
    ("sweep unknown name", lambda w: ["sweep", "--config", "nosuch"], r"unknown sweep 'nosuch'"),
    ("sweep bad yaml", lambda w: ["sweep", "--config", _sweep(w, "bad", "methods: [clip\n")], r"not valid YAML"),
    ("sweep not utf-8", lambda w: ["sweep", "--config", _sweep(w, "latin", b"methods: [caf\xe9]\ndatasets: [synth]\n")], r"not UTF-8"),
    ("sweep unknown key", lambda w: ["sweep", "--config", _sweep(w, "key", "methods: [clip]\ndatasets: [synth]\nepochs: 3\n")], r"unknown key 'epochs'"),
    ("sweep unknown method", lambda w: ["sweep", "--config", _sweep(w, "method", "methods: [nosuch]\ndatasets: [synth]\n")], r"not registered: nosuch"),
    ("sweep yaml tag", lambda w: ["sweep", "--config", _sweep(w, "tag", "methods: [clip]\ndatasets: [synth]\noverrides: [!!python/object/apply:os.system [x]]\n")], r"not valid YAML|could not determine a constructor"),
    ("sweep interpolation", lambda w: ["sweep", "--config", _sweep(w, "interp", "methods: [clip]\ndatasets: [synth]\noverrides: ['run_id=${oc.env:HOME}']\n")], r"interpolations"),
    ("sweep impossible value", lambda w: ["sweep", "--config", _sweep(w, "value", "methods: [tgdt]\ndatasets: [synth]\noverrides: [tgdt.dropout=5]\n"), "--dry-run"], r"tgdt.dropout=5"),
    # --- output paths that cannot be written (OSError: one line)
    ("runs dir under a file", lambda w: _bench(w, "--runs-dir", _file(w, "runsfile", "x") / "runs"), r"Not a directory|File exists"),
    ("data root under a file", lambda w: [*_bench(w), "--data-root", _file(w, "rootfile", "x") / "data"], r"Not a directory|File exists"),
    ("synth out under a file", lambda w: ["data", "synth", "--out", _file(w, "synthfile", "x") / "d"], r"Not a directory|File exists"),
    ("convert missing source", lambda w: ["data", "convert", "coco", "--source", w["base"] / "nosrc", "--out", w["base"] / "o"], r"does not exist"),
]  # fmt: skip


def _torch_file(world, name: str, content) -> Path:
    path = world["base"] / "inputs" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)
    return path


def _npz(world) -> Path:
    path = world["base"] / "inputs" / "x.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, a=np.ones((2, 2)))
    return path


def _huge_header(world) -> Path:
    """A .npy whose header claims 10^12 rows of float32 but whose body holds 8 bytes."""
    path = world["base"] / "inputs" / "huge.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": (10**12, 8)}
        )
        handle.write(b"\0" * 8)
    return path


def _truncate_vectors(folder: Path) -> None:
    for path in folder.rglob("vectors.npy"):
        path.write_bytes(path.read_bytes()[:100])
    for path in folder.rglob("index.faiss"):
        path.write_bytes(path.read_bytes()[:100])


def _resume_with(world, checkpoint: Path) -> list[str]:
    """A bench --resume whose unfinished run's last.ckpt (in staging) is `checkpoint`."""
    staging = world["runs"] / "_staging" / "synth" / "clip" / "planted" / "checkpoints"
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint, staging / "last.ckpt")
    return [*_bench(world, "run_id=planted"), "--resume"]


def test_the_table_is_large() -> None:
    assert len(CASES) >= 80


@pytest.mark.parametrize(("build", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_and_loses_nothing(world, build, pattern) -> None:
    import re

    argv = build(world)
    before = _snapshot(world["runs"])
    code, _, err = _run(*argv)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]
    assert not world["marker"].exists(), "a payload ran"
    after = _snapshot(world["runs"])
    lost = {k for k in before if k not in after or after[k] != before[k]}
    assert not lost, f"changed or lost: {sorted(lost)[:5]}"
    new_runs = {k for k in after if k not in before and not k.startswith(("_staging", "_sweeps"))}
    assert not new_runs, f"stray files: {sorted(new_runs)[:5]}"


# ------------------------------------------------------------------------------------------ fuzzing

KEYS = st.sampled_from(
    ["optim.lr", "data.batch_size", "trainer.max_epochs", "seed", "tgdt.dropout", "irra.mask_prob",
     "data.image_size", "backbone.context_length", "run_id", "optim.betas", "nosuch.key", "data.augment"]
)  # fmt: skip
VALUES = st.one_of(
    st.integers(-(2**70), 2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.text(max_size=12),
    st.sampled_from(["[1,2]", "[", "{a: 1}", "!!python/name:os.system", "${x}", "null", "true", "1e-4"]),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(overrides=st.lists(st.tuples(KEYS, VALUES).map(lambda kv: f"{kv[0]}={kv[1]}"), max_size=3))
def test_fuzzed_overrides_compose_or_fail_with_one_user_error(overrides) -> None:
    from xmodal_bench.run.request import RunRequest

    method = "tgdt" if any(o.startswith("tgdt.") for o in overrides) else "irra"
    try:
        RunRequest(method, "synth", overrides=tuple(overrides)).compose()
    except UserError as exc:
        assert "\n" not in str(exc).strip()


ARRAYS = st.tuples(
    st.sampled_from([np.float16, np.float32, np.float64, np.int32, np.bool_]),
    st.tuples(st.integers(0, 5), st.integers(0, 4)),
    st.sampled_from([0.0, 1.0, 1e38, -1e-30, np.inf, np.nan]),
)


@settings(max_examples=60, deadline=None)
@given(
    images=ARRAYS, texts=ARRAYS, protocol=st.sampled_from(["caption", "coco", "coco1k", "coco5k", "person"])
)
def test_fuzzed_score_inputs_give_metrics_or_one_user_error(
    images, texts, protocol, tmp_path_factory
) -> None:
    from xmodal_bench.metrics.score import score_files

    folder = tmp_path_factory.mktemp("fuzz")
    paths = []
    for name, (dtype, shape, scale) in (("i", images), ("t", texts)):
        rng = np.random.default_rng(shape[0] * 7 + shape[1])
        with np.errstate(all="ignore"):
            array = (rng.standard_normal(shape) * scale).astype(dtype)
        path = folder / f"{name}.npy"
        np.save(path, array)
        paths.append(path)
    pids = {}
    if protocol == "person":
        for name, rows in (("image_pids", images[1][0]), ("text_pids", texts[1][0])):
            np.save(folder / f"{name}.npy", np.arange(rows) % 2)
            pids[name] = folder / f"{name}.npy"
    try:
        metrics = score_files(*paths, protocol, **pids)
    except UserError as exc:
        assert "\n" not in str(exc).strip()
        return
    assert all(np.isfinite(v) for v in metrics.values())
