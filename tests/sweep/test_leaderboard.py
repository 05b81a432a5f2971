"""Leaderboards built from results records: grouping, mean ± std, best in bold, all three formats."""

from __future__ import annotations

import csv
import io
import json

import pytest

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.report.leaderboard import write_leaderboard
from xmodal_bench.report.results import RESULTS_SCHEMA, find_results
from xmodal_bench.report.tables import build_leaderboard


def _metrics(r1: float) -> dict[str, float]:
    return {"r1": r1, "r5": r1 + 10, "r10": r1 + 20, "map": r1 / 2, "minp": r1 / 4}


def _record(
    method: str, seed: int, modes: dict[str, tuple[float, float]], dataset: str = "synth_reid", changes=()
) -> dict:
    """A results record; `modes` maps mode name -> (R@1, t2i ms/query), the first mode is primary."""
    entries = {m: {"metrics": _metrics(r1), "latency_ms": {"t2i_ms": ms}} for m, (r1, ms) in modes.items()}
    primary = next(iter(modes))
    return {
        "schema": RESULTS_SCHEMA,
        "method": method,
        "dataset": dataset,
        "protocol": "person",
        "scale": "tiny",
        "seed": seed,
        "config_id": f"{method}:{','.join(changes)}",
        "changes": list(changes),
        "primary_mode": primary,
        "metrics": entries[primary]["metrics"],
        "modes": entries,
        "efficiency": {
            "train_samples_per_s": 100.0 + seed,
            "images_per_s": 50.0,
            "params_m": 7.0,
            "peak_memory_mb": 900,
        },
    }


@pytest.fixture
def runs(tmp_path):
    records = [
        _record("clip", 0, {"global": (40.0, 0.02)}),
        _record("clip", 1, {"global": (42.0, 0.02)}),
        _record("irra", 0, {"global": (50.0, 0.03)}),
        _record("irra", 0, {"global": (35.0, 0.03)}, changes=["irra.losses=[sdm]"]),
        _record("tgdt", 0, {"fused": (45.0, 0.5), "global": (30.0, 0.01)}),
        _record("clip", 0, {"global": (10.0, 0.1)}, dataset="synth"),
    ]
    for i, record in enumerate(records):
        atomic_write_json(
            tmp_path / record["dataset"] / record["method"] / f"run{i}" / "results.json", record
        )
    (tmp_path / "synth" / "clip" / "broken").mkdir(parents=True)
    (tmp_path / "synth" / "clip" / "broken" / "results.json").write_text("{half a fi")
    return tmp_path


def test_find_results_skips_broken_files(runs) -> None:
    assert len(find_results(runs)) == 6


def test_rows_group_seeds_and_list_secondary_modes(runs) -> None:
    board = build_leaderboard(find_results(runs), "synth_reid")
    labels = [row.label for row in board.rows]
    assert labels == ["clip", "irra", "irra irra.losses=[sdm]", "tgdt", "tgdt · global"]
    clip = board.rows[0]
    assert (
        clip.seeds == 2 and clip.mean("r1") == pytest.approx(41.0) and clip.std("r1") == pytest.approx(2**0.5)
    )


def test_markdown_bolds_the_best_of_each_column(runs) -> None:
    text = build_leaderboard(find_results(runs), "synth_reid").markdown()
    irra_line = next(line for line in text.splitlines() if line.startswith("| irra "))
    assert "**50.00**" in irra_line  # best R@1
    global_line = next(line for line in text.splitlines() if line.startswith("| tgdt · global"))
    assert "**0.010**" in global_line  # lowest latency wins
    assert "41.00 ± 1.41" in text


def test_write_leaderboard_outputs_agree(runs, tmp_path) -> None:
    out = tmp_path / "boards"
    paths = write_leaderboard(runs, out, "synth_reid")
    assert [p.name for p in paths] == ["synth_reid.md", "synth_reid.csv", "synth_reid.json"]
    rows = json.loads(paths[2].read_text())["rows"]
    table = list(csv.DictReader(io.StringIO(paths[1].read_text())))
    assert [r["method"] for r in rows] == [r["method"] for r in table]
    assert float(table[1]["r1"]) == rows[1]["r1"] == 50.0
    assert rows[2]["r1"] == 35.0  # the ablation is a row of its own, not averaged into irra
    assert not list(out.glob(".*tmp"))  # no temp files left behind


def test_rebuild_writes_plots_and_an_index(runs, tmp_path, capsys) -> None:
    from xmodal_bench.cli import main

    out = tmp_path / "boards"
    assert main(["leaderboard", "--runs-dir", str(runs), "--out", str(out)]) == 0
    for dataset in ("synth", "synth_reid"):
        for suffix in ("md", "csv", "json", "png"):
            assert (out / f"{dataset}.{suffix}").is_file(), (dataset, suffix)
        assert (out / f"{dataset}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert f"![{dataset}: accuracy vs t2i latency]({dataset}.png)" in (out / f"{dataset}.md").read_text()
    index = (out / "README.md").read_text()
    assert "| synth_reid | person | 5 | irra (r1 50.00) | [synth_reid.md](synth_reid.md)" in index
    assert "[synth.png](synth.png)" in index and "## Accuracy vs latency" in index
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == [".leaderboards.lock"]
    assert "index: " in capsys.readouterr().out


def test_leaderboard_command_without_runs_is_a_user_error(tmp_path, capsys) -> None:
    from xmodal_bench.cli import main

    assert main(["leaderboard", "--runs-dir", str(tmp_path / "nothing"), "--out", str(tmp_path / "b")]) == 2
    assert "no runs folder" in capsys.readouterr().err


def test_settings_shared_by_every_row_are_said_once(tmp_path) -> None:
    shared = ["trainer.max_epochs=2", "data.workers=0"]
    records = [
        _record("clip", 0, {"global": (40.0, 0.02)}, changes=shared),
        _record("irra", 0, {"global": (45.0, 0.03)}, changes=[*shared, "irra.mask_prob=0.2"]),
    ]
    board = build_leaderboard(records, "synth_reid")
    assert board.common == tuple(shared)
    assert [row.label for row in board.rows] == ["clip", "irra irra.mask_prob=0.2"]
    assert "Settings shared by every row: `trainer.max_epochs=2 data.workers=0`." in board.markdown()


def test_a_failed_rebuild_leaves_every_file_whole(runs, tmp_path, monkeypatch) -> None:
    from xmodal_bench.report import leaderboard

    out = tmp_path / "boards"
    write_leaderboard(runs, out, "synth_reid")
    before = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    atomic_write_json(
        runs / "synth_reid" / "clip" / "run9" / "results.json", _record("clip", 2, {"global": (99.0, 0.01)})
    )

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(leaderboard, "atomic_write_json", crash)  # md written, then the json fails
    with pytest.raises(OSError):
        write_leaderboard(runs, out, "synth_reid")
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in out.iterdir() if not p.name.startswith(".")}
    assert set(after) == set(before)  # no half-written or temporary files
    assert json.loads(after["synth_reid.json"]) == json.loads(before["synth_reid.json"])
    write_leaderboard(runs, out, "synth_reid")
    assert "60.33 ± " in (out / "synth_reid.md").read_text()  # (40 + 42 + 99) / 3


def test_kendall_tau_sits_beside_the_metrics_so_base_and_bcls_rows_compare(tmp_path) -> None:
    base = _record("clip", 0, {"global": (40.0, 0.02)})
    bcls = _record("clip+bcls", 0, {"global": (38.0, 0.02)})
    base["modes"]["global"]["kendall_tau"] = {"kendall_tau": 0.128, "t2i": 0.135, "i2t": 0.12}
    bcls["modes"]["global"]["kendall_tau"] = {"kendall_tau": 0.2, "t2i": 0.21, "i2t": 0.19}
    board = build_leaderboard([base, bcls], "synth_reid")
    assert [row.label for row in board.rows] == ["clip", "clip+bcls"]
    lines = board.markdown().splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    titles = [cell.strip() for cell in header.strip("|").split("|")]
    assert titles.index("Kendall τ") == titles.index("mINP") + 1  # after the metrics, before efficiency
    column = titles.index("Kendall τ")
    cells = {line.split("|")[1].strip(): line.split("|")[column + 1].strip() for line in lines[-2:]}
    assert cells == {"clip": "0.128", "clip+bcls": "**0.200**"}
    assert [r["kendall_tau"] for r in board.records()] == [0.128, 0.2]
