"""`bench` end to end with the BCLS plugin on the tiny synthetic fixture: trains on cached pseudo-labels,
and results carry Kendall's tau for the base and the +BCLS run."""

from __future__ import annotations

import json
import shutil

import pytest

from xmodal_bench.cli import main

pytestmark = pytest.mark.slow


def _bench(root, tmp_path, synth_params, method: str, *extra: str) -> dict:
    params = [f"data.synthetic.{k}={v}" for k, v in synth_params["synth"].items()]
    code = main(
        [
            "bench", "--method", method, "--data", "synth", "--data-root", str(root),
            "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--leaderboards-dir", str(tmp_path / "boards"),
            "data.batch_size=16", "data.eval_batch_size=64", "data.workers=0", "data.val_split=null",
            "eval.latency_queries=20", *params, *extra,
        ]
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "runs" / "synth" / method).glob("*/results.json")
    return json.loads(path.read_text())


def test_clip_bcls_trains_on_cached_pseudo_labels_and_reports_tau(synth_root, tmp_path, synth_params) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root / "synth", root / "synth")  # the plugin writes its cache beside the shards
    record = _bench(root, tmp_path, synth_params, "clip+bcls", "bcls.window=4")
    tau = record["modes"][record["primary_mode"]]["kendall_tau"]
    assert tau["labels"] == "tfidf" and tau["queries"] == {"t2i": 48 * 5, "i2t": 48}
    assert all(tau[k] is not None and -1 <= tau[k] <= 1 for k in ("t2i", "i2t", "kendall_tau"))
    assert record["method"] == "clip+bcls" and record["config"]["bcls"]["window"] == 4
    assert list((root / "synth" / "bcls").glob("tfidf-*.pt")), "pseudo-label cache not written"
    (metrics,) = (tmp_path / "runs" / "synth" / "clip+bcls").glob("*/logs/metrics.csv")
    header = metrics.read_text().splitlines()[0]
    assert "train/kendall" in header and "train/infonce" in header  # clip keeps InfoNCE, adds Kendall
    assert "| clip+bcls " in (tmp_path / "boards" / "synth.md").read_text()
