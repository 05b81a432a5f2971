"""`xmodal-bench bench` end to end on the tiny synthetic fixture: train, test, results, leaderboard."""

from __future__ import annotations

import json

import pytest
import yaml

from xmodal_bench.bcls.tau import tau_from_values
from xmodal_bench.cli import main
from xmodal_bench.metrics import CAPTION_METRIC_NAMES, PERSON_METRIC_NAMES
from xmodal_bench.report.ranks import load_ranks
from xmodal_bench.report.results import find_results
from xmodal_bench.report.tables import build_leaderboard

pytestmark = pytest.mark.slow


def _bench(synth_root, tmp_path, synth_params, dataset: str, *extra: str) -> int:
    params = [f"data.synthetic.{k}={v}" for k, v in synth_params[dataset].items()]
    return main(
        [
            "bench", "--method", "clip", "--data", dataset, "--data-root", str(synth_root),
            "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
            "--leaderboards-dir", str(tmp_path / "boards"),
            "data.batch_size=16", "data.eval_batch_size=16", "data.workers=0", *params, *extra,
        ]
    )  # fmt: skip


def _results(tmp_path, dataset: str) -> list[dict]:
    return [
        json.loads(p.read_text()) for p in sorted((tmp_path / "runs" / dataset).glob("clip/*/results.json"))
    ]


def test_caption_protocol_run_writes_results_and_leaderboard(
    synth_root, tmp_path, synth_params, capsys
) -> None:
    assert _bench(synth_root, tmp_path, synth_params, "synth") == 0
    out = capsys.readouterr().out
    assert "clip on synth" in out and "rsum=" in out
    (record,) = _results(tmp_path, "synth")
    assert record["method"] == "clip" and record["dataset"] == "synth" and record["protocol"] == "caption"
    assert set(record["metrics"]) == set(CAPTION_METRIC_NAMES)
    assert all(
        0 <= record["metrics"][k] <= 100 for k in CAPTION_METRIC_NAMES if "_r" in k and "medr" not in k
    )
    assert record["primary_mode"] == "global" and set(record["modes"]["global"]["latency_ms"]) == {
        "t2i_ms",
        "i2t_ms",
    }
    efficiency = record["efficiency"]
    for key in ("train_samples_per_s", "images_per_s", "texts_per_s", "params_m", "peak_memory_mb"):
        assert efficiency[key] > 0, key
    assert record["environment"]["versions"]["torch"] and record["training"]["steps"] == 64 * 5 // 16
    run_dir = tmp_path / "runs" / "synth" / "clip" / record["run_id"]
    assert (
        yaml.safe_load((run_dir / "config.yaml").read_text())["optim"]["lr"]
        == record["config"]["optim"]["lr"]
    )
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert record["changes"][:2] == ["trainer.max_epochs=1", "data.batch_size=16"]
    board = (tmp_path / "boards" / "synth.md").read_text()
    assert "| clip | tiny | 1 |" in board  # the changes every row shares are said once, above the table
    assert "Settings shared by every row: `trainer.max_epochs=1 data.batch_size=16" in board

    # the same config lands in the same run folder: a rerun replaces, never duplicates, its row
    assert _bench(synth_root, tmp_path, synth_params, "synth") == 0
    assert len(_results(tmp_path, "synth")) == 1
    # another seed is another run, and the leaderboard averages the two
    assert _bench(synth_root, tmp_path, synth_params, "synth", "seed=1") == 0
    assert len(_results(tmp_path, "synth")) == 2
    assert "| tiny | 2 |" in (tmp_path / "boards" / "synth.md").read_text()


def test_person_protocol_run(synth_root, tmp_path, synth_params) -> None:
    assert _bench(synth_root, tmp_path, synth_params, "synth_reid") == 0
    (record,) = _results(tmp_path, "synth_reid")
    assert record["protocol"] == "person" and set(record["metrics"]) == set(PERSON_METRIC_NAMES)
    assert "| R@1 | R@5 | R@10 | mAP | mINP |" in (tmp_path / "boards" / "synth_reid.md").read_text()
    # the ranks and each query's Kendall tau are saved; the tau column gets its interval from them
    run_dir = tmp_path / "runs" / "synth_reid" / "clip" / record["run_id"]
    ranks = load_ranks(run_dir)["global"]
    assert set(ranks) == {"t2i", "tau/t2i", "tau/i2t"} and len(ranks["tau/t2i"]) == len(ranks["t2i"])
    tau = record["modes"]["global"]["kendall_tau"]
    assert tau_from_values(ranks)["kendall_tau"] == pytest.approx(tau["kendall_tau"], abs=1e-12)
    (row,) = build_leaderboard(find_results(tmp_path / "runs"), "synth_reid").rows
    low, high = row.intervals["kendall_tau"]
    assert low <= tau["kendall_tau"] <= high and low < high
