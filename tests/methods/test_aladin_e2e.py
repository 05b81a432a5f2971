"""ALADIN end to end on the tiny fixture: `bench` reports the three modes and honours the
distillation delay; `index build|search` put the trained checkpoint to work."""

from __future__ import annotations

import csv
import json
import tarfile

import pytest

from xmodal_bench.cli import main
from xmodal_bench.metrics import CAPTION_METRIC_NAMES

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(synth_root, synth_params, tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("aladin")
    params = [f"data.synthetic.{k}={v}" for k, v in synth_params["synth"].items()]
    code = main(
        [
            "bench", "--method", "aladin", "--data", "synth", "--data-root", str(synth_root),
            "--max-epochs", "2", "--runs-dir", str(tmp / "runs"), "--leaderboards-dir", str(tmp / "boards"),
            "data.batch_size=16", "data.eval_batch_size=16", "data.workers=0",
            "trainer.limit_train_batches=3", "trainer.log_every_n_steps=1", "aladin.distill_after_epochs=1",
            "eval.latency_queries=20", *params,
        ]
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp / "runs" / "synth" / "aladin").glob("*/results.json")
    return {"tmp": tmp, "record": json.loads(path.read_text()), "dir": path.parent}


def test_bench_reports_the_three_modes(run) -> None:
    record = run["record"]
    assert record["primary_mode"] == "matching" and set(record["metrics"]) == set(CAPTION_METRIC_NAMES)
    assert list(record["modes"]) == ["matching", "alignment", "two_stage"]
    for entry in record["modes"].values():
        assert set(entry["latency_ms"]) == {"t2i_ms", "i2t_ms"} and entry["latency_ms"]["t2i_ms"] > 0
    assert "| aladin" in (run["tmp"] / "boards" / "synth.md").read_text()


def test_distillation_starts_after_the_delay(run) -> None:
    rows = list(csv.DictReader((run["dir"] / "logs" / "metrics.csv").open()))
    weight = {}
    for row in rows:
        if row.get("train/distill_on"):
            weight.setdefault(int(row["epoch"]), set()).add(float(row["train/distill_on"]))
    assert weight == {0: {0.0}, 1: {1.0}}


def _index(run, *args: str) -> int:
    checkpoint = run["dir"] / "checkpoints" / "last.ckpt"
    return main(
        ["index", "build", "--checkpoint", str(checkpoint), "--out", str(run["tmp"] / "index"), *args]
    )


def test_index_build_and_search(run, synth_root, capsys) -> None:
    assert _index(run, "--backend", "faiss-ivf", "--batch-size", "32") == 0
    assert "indexed 48 images and 240 captions of synth/test with aladin" in capsys.readouterr().out
    meta = json.loads((run["tmp"] / "index" / "meta.json").read_text())
    assert meta["backend"] == "faiss-ivf" and len(meta["images"]) == 48 and len(meta["captions"]) == 240

    assert (
        main(["index", "search", str(run["tmp"] / "index"), "--text", "a red circle", "--k", "3", "--json"])
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert [r["rank"] for r in results] == [1, 2, 3] and results[0]["image_id"] in meta["images"]
    assert results[0]["score"] >= results[1]["score"] >= results[2]["score"]

    # an image of the split finds captions; the pixels come straight from a shard
    shard = sorted((synth_root / "synth" / "test").glob("*.tar"))[0]
    with tarfile.open(shard) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg"))
        picture = run["tmp"] / "query.jpg"
        picture.write_bytes(tar.extractfile(member).read())
    assert main(["index", "search", str(run["tmp"] / "index"), "--image", str(picture)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("top 5 texts for image") and len(out.strip().splitlines()) == 6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["index", "build", "--checkpoint", "/no/such.ckpt", "--out", "/tmp/x"], "checkpoint not found"),
        (["index", "search", "/no/such/index", "--text", "a"], "no index at"),
    ],
)
def test_index_user_errors(argv, message: str, capsys) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_search_with_a_missing_image_is_a_user_error(run, capsys) -> None:
    if not (run["tmp"] / "index" / "meta.json").is_file():
        assert _index(run) == 0
    assert main(["index", "search", str(run["tmp"] / "index"), "--image", "/no/such.jpg"]) == 2
    assert "image not found" in capsys.readouterr().err
