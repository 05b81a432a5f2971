"""`xmodal-bench bench` trains and evaluates on converted data, with each dataset's protocol."""

from __future__ import annotations

import json

import pytest

from datamodules.converters import convert
from datamodules.converters.samples import write_sample
from xmodal_bench.cli import main
from xmodal_bench.metrics import CAPTION_METRIC_NAMES, PERSON_METRIC_NAMES

pytestmark = pytest.mark.slow


def _bench(tmp_path, name: str) -> dict:
    sample = write_sample(name, tmp_path / "src")
    convert(name, sample.root, tmp_path / "data", progress=False)
    code = main(
        [
            "bench", "--method", "clip", "--data", name, "--data-root", str(tmp_path / "data"),
            "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--leaderboards-dir", str(tmp_path / "boards"),
            "data.workers=0", "data.batch_size=8", "eval.latency_queries=8",
        ]
    )  # fmt: skip
    assert code == 0
    (path,) = (tmp_path / "runs" / name / "clip").glob("*/results.json")
    return json.loads(path.read_text())


def test_coco_reports_5k_and_1k_in_one_results_file(tmp_path) -> None:
    record = _bench(tmp_path, "coco")
    assert record["protocol"] == "coco"
    expected = {f"{prefix}/{name}" for prefix in ("5k", "1k") for name in CAPTION_METRIC_NAMES}
    assert set(record["metrics"]) == expected
    # the 10-image test split makes five 2-image folds: every 1K recall@5 is a hit
    assert record["metrics"]["1k/t2i_r5"] == 100.0 and record["metrics"]["5k/t2i_r5"] <= 100.0


def test_icfg_person_protocol_without_validation_split(tmp_path) -> None:
    record = _bench(tmp_path, "icfg")
    assert record["protocol"] == "person" and set(record["metrics"]) == set(PERSON_METRIC_NAMES)
    assert record["training"]["tested_checkpoint"] == "last"
