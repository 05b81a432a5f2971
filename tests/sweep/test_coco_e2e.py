"""A converted COCO whose test split is the real 5K test ids: convert, zero-shot, ECCV / CxC, intervals.

The annotation file is Karpathy's format with eccv-caption's own COCO 5K test image and caption
ids (5 captions per image) and 16 x 16 random images, so the user's path runs end to end in
seconds: `data convert coco`, `zeroshot --data coco`, the leaderboard, `compare`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal_bench.cli import main
from xmodal_bench.metrics.eccv import ECCV_METRIC_NAMES, coco_test_ids, package
from xmodal_bench.report.ranks import load_ranks

pytestmark = pytest.mark.slow


def _karpathy_coco(root: Path) -> None:
    """`dataset_coco.json`, `train2014/`, `val2014/`: the 5K test split on its real ids, 20 train and val images."""
    images, captions = coco_test_ids()
    truth = package().coco_gts["t2i"]
    by_image: dict[int, list[int]] = {}
    for caption in captions.tolist():
        by_image.setdefault(int(truth[int(caption)][0]), []).append(int(caption))
    rng = np.random.default_rng(0)
    records = []

    def add(cocoid: int, split: str, folder: str, sentids: list[int]) -> None:
        name = f"COCO_{folder}_{cocoid:012d}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / folder / name)
        sentences = [{"raw": f"a photo numbered {s}", "sentid": s} for s in sentids]
        records.append(
            {"filepath": folder, "filename": name, "cocoid": cocoid, "split": split, "sentids": sentids,
             "sentences": sentences}
        )  # fmt: skip

    for image in images.tolist():
        add(int(image), "test", "val2014", by_image[int(image)])
    for k in range(20):
        add(10_000_000 + k, "train", "train2014", [90_000_000 + 5 * k + j for j in range(5)])
        add(20_000_000 + k, "val", "val2014", [95_000_000 + 5 * k + j for j in range(5)])
    (root / "dataset_coco.json").write_text(json.dumps({"images": records, "dataset": "coco"}))


def test_zero_shot_on_a_converted_coco_reports_eccv_and_cxc_with_intervals(tmp_path, capsys) -> None:
    _karpathy_coco(tmp_path / "src")
    data = tmp_path / "data"
    assert main(["data", "convert", "coco", "--source", str(tmp_path / "src"), "--out", str(data)]) == 0
    runs, boards = tmp_path / "runs", tmp_path / "boards"
    args = ["zeroshot", "--data", "coco", "--data-root", str(data), "--runs-dir", str(runs)]
    assert main([*args, "--leaderboards-dir", str(boards)]) == 0
    capsys.readouterr()
    (results,) = sorted(runs.glob("coco/zeroshot/*/results.json"))
    record = json.loads(results.read_text())
    metrics = record["modes"]["global"]["metrics"]
    assert set(ECCV_METRIC_NAMES) <= set(metrics) and "5k/rsum" in metrics and "1k/rsum" in metrics
    assert all(0 <= metrics[name] <= 100 for name in ECCV_METRIC_NAMES)
    # every query's values are saved; their means are the reported numbers
    saved = load_ranks(results.parent)["global"]
    for name in ECCV_METRIC_NAMES:
        assert len(saved[name]) == (5000 if "/i2t_" in name else 25000)
        assert 100 * float(np.nanmean(saved[name].numpy())) == pytest.approx(metrics[name], abs=1e-9)
    board = (boards / "coco.md").read_text()
    header = next(line for line in board.splitlines() if line.startswith("| method"))
    assert "ECCV i2t mAP@R" in header and "CxC t2i R@1" in header
    assert board.count("[") >= 10  # cells carry their paired-bootstrap interval
    assert main(["compare", str(results.parent), str(results.parent), "--json", "--resamples", "50"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["metrics"]}
    assert {"eccv/t2i_map_at_r", "cxc/i2t_r1", "kendall_tau"} <= set(rows)
    assert all(r["difference"] == 0 and r["p"] == 1.0 for r in rows.values())
