"""Paired bootstrap (`report.significance`), `xmodal-bench compare` and the leaderboard's intervals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xmodal_bench.bcls.tau import tau_from_values
from xmodal_bench.cli import main
from xmodal_bench.errors import UserError
from xmodal_bench.metrics import get_protocol
from xmodal_bench.metrics.eccv import metrics_from_values
from xmodal_bench.report.ranks import save_ranks
from xmodal_bench.report.results import RESULTS_FILE, RESULTS_SCHEMA
from xmodal_bench.report.significance import distribution, draw, extend, interval, p_value
from xmodal_bench.report.tables import build_leaderboard


def _r1(ranks):
    return {"r1": float((ranks["t2i"] < 1).double().mean() * 100)}


def test_the_interval_covers_the_true_value_at_its_nominal_rate() -> None:
    """Queries hit at R@1 with probability p: the 95% interval holds 100 p about 95% of the time."""
    generator = torch.Generator().manual_seed(0)
    p, n, trials, covered = 0.3, 200, 150, 0
    for trial in range(trials):
        ranks = {"t2i": (torch.rand(n, generator=generator) >= p).long() * 7}
        low, high = interval(distribution(_r1, ranks, draw(ranks, resamples=300, seed=trial))["r1"])
        covered += low <= 100 * p <= high
    # binomial(150, 0.95): sd 1.8%; percentile intervals run slightly narrow at n = 200
    assert 0.89 <= covered / trials <= 0.99


def test_the_interval_of_a_per_query_id_metric_covers_at_its_nominal_rate() -> None:
    """ECCV-style per-query values: defined on a random 40% of the rows (NaN elsewhere), AP-like
    values of mean 0.3; the interval of the resampled mean (`metrics_from_values`) holds 30 about
    95% of the time."""
    generator = torch.Generator().manual_seed(1)
    n, trials, covered = 400, 200, 0
    for trial in range(trials):
        values = torch.rand(n, generator=generator, dtype=torch.float64) * 0.6  # mean 0.3
        values[torch.rand(n, generator=generator) >= 0.4] = float("nan")
        per_query = {"eccv/t2i_map_at_r": values}
        dist = distribution(metrics_from_values, per_query, draw(per_query, resamples=1000, seed=trial))
        low, high = interval(dist["eccv/t2i_map_at_r"])
        covered += low <= 30.0 <= high
    assert 0.90 <= covered / trials <= 0.99  # binomial(200, 0.95): sd 1.5%


def test_p_value_of_identical_and_separated_distributions() -> None:
    assert p_value(np.zeros(100)) == 1.0
    assert p_value(np.full(100, 2.0)) == 0.0
    assert p_value(np.linspace(-1, 3, 101)) == pytest.approx(2 * 26 / 101)


def _run(
    root: Path, name: str, ranks: dict, dataset: str = "synth", method: str = "clip", seed: int = 0
) -> Path:
    folder = root / dataset / method / name
    folder.mkdir(parents=True)
    metrics = get_protocol("caption").metrics(ranks)
    tau = tau_from_values(ranks)
    mode = {"metrics": metrics}
    if tau:
        mode["kendall_tau"] = {"kendall_tau": tau["kendall_tau"]}
    record = {
        "schema": RESULTS_SCHEMA,
        "method": method,
        "dataset": dataset,
        "protocol": "caption",
        "scale": "tiny",
        "seed": seed,
        "config_id": name.split("-")[0],
        "primary_mode": "global",
        "metrics": metrics,
        "modes": {"global": mode},
        "efficiency": {},
    }
    (folder / RESULTS_FILE).write_text(json.dumps(record))
    save_ranks(folder, {"global": ranks})
    return folder


def _ranks(seed: int, shift: float = 0.0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    i2t = (torch.rand(60, generator=generator) * (8 + shift)).long()
    t2i = (torch.rand(300, generator=generator) * (12 + shift)).long()
    return {"i2t": i2t, "t2i": t2i}


def _nudged(ranks: dict, queries: int) -> dict:
    """The same ranks with the first `queries` text queries one place lower."""
    t2i = ranks["t2i"].clone()
    t2i[:queries] += 1
    return {"i2t": ranks["i2t"], "t2i": t2i}


def test_compare_a_run_with_itself_and_with_a_worse_one(tmp_path, capsys) -> None:
    good = _run(tmp_path, "a", _ranks(0))
    worse = _run(tmp_path, "b", _ranks(1, shift=30.0))
    assert main(["compare", str(good), str(good), "--json", "--resamples", "200"]) == 0
    rows = json.loads(capsys.readouterr().out)["metrics"]
    assert [r["metric"] for r in rows] == list(get_protocol("caption").metric_names)
    assert all(r["difference"] == 0 and r["low"] == 0 and r["high"] == 0 and r["p"] == 1.0 for r in rows)
    assert main(["compare", str(good), str(worse), "--resamples", "200"]) == 0
    table = capsys.readouterr().out
    rsum = next(line for line in table.splitlines() if line.startswith("rsum"))
    assert float(rsum.split()[-1]) < 0.01  # a p-value near 0
    other = _run(tmp_path, "c", _ranks(2), dataset="f30k")
    assert main(["compare", str(good), str(other)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xmodal-bench: error: the runs are on different datasets") and err.count("\n") == 1
    assert main(["compare", str(good), str(tmp_path / "nowhere")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_leaderboard_rows_carry_intervals_and_ties_with_the_best_are_marked(tmp_path) -> None:
    from xmodal_bench.report.results import find_results

    _run(tmp_path, "a-s0", _ranks(0), method="clip", seed=0)
    _run(tmp_path, "a-s1", _nudged(_ranks(0), 3), method="clip", seed=1)
    _run(tmp_path, "b-s0", _nudged(_ranks(0), 5), method="irra")  # a few queries apart: a tie
    _run(tmp_path, "c-s0", _ranks(5, shift=40.0), method="tgdt")  # clearly worse
    board = build_leaderboard(find_results(tmp_path), "synth")
    by_method = {row.method: row for row in board.rows}
    assert set(by_method) == {"clip", "irra", "tgdt"}
    for row in board.rows:
        low, high = row.intervals["rsum"]
        assert low <= row.mean("rsum") <= high or row.seeds > 1
    best = max(board.rows, key=lambda r: r.mean("rsum"))
    assert "rsum" not in by_method["tgdt"].not_below_best
    assert "rsum" in next(r for r in board.rows if r is not best and r.method != "tgdt").not_below_best
    markdown = board.markdown()
    assert "paired-bootstrap 95% interval" in markdown and "†" in markdown
    record = board.records()[0]
    assert {"rsum_ci_low", "rsum_ci_high", "rsum_not_below_best"} <= set(record)


def test_a_saved_distribution_is_the_one_a_rebuild_draws_and_is_read_back(tmp_path, monkeypatch) -> None:
    from xmodal_bench.report import significance
    from xmodal_bench.report.results import find_results

    protocol = get_protocol("caption")
    folders = [_run(tmp_path, f"a-s{s}", _ranks(s), seed=s) for s in range(2)]
    fresh = {row.method: row.intervals for row in build_leaderboard(find_results(tmp_path), "synth").rows}
    for folder in folders:
        significance.save_bootstrap(folder, protocol, {"global": significance.run_ranks(folder, "global")})
    keys = list(protocol.metrics(_ranks(0)))
    saved = significance.saved_distribution(folders[0], "global", keys)
    assert saved is not None and set(saved) == set(keys) and saved["rsum"].shape == (significance.RESAMPLES,)
    assert significance.saved_distribution(folders[0], "global", keys, resamples=10) is None  # other count
    assert significance.saved_distribution(folders[0], "fused", keys) is None  # no such mode

    def no_resampling(*args, **kwargs):
        raise AssertionError("resampled a run that has its distribution saved")

    monkeypatch.setattr(significance, "distribution", no_resampling)
    again = {row.method: row.intervals for row in build_leaderboard(find_results(tmp_path), "synth").rows}
    assert again == fresh  # the same draw: the same intervals, without resampling


def _with_tau(ranks: dict, seed: int, level: float) -> dict:
    """`ranks` plus per-query taus around `level`, measured on half of the queries (NaN elsewhere)."""
    generator = torch.Generator().manual_seed(seed)
    out = dict(ranks)
    for direction in ("t2i", "i2t"):
        n = len(ranks[direction])
        tau = (level + 0.2 * torch.randn(n, generator=generator, dtype=torch.float64)).clamp(-1, 1)
        tau[torch.arange(n) % 2 == 1] = float("nan")
        out[f"tau/{direction}"] = tau
    return out


def test_kendall_tau_gets_an_interval_a_paired_comparison_and_older_runs_still_pair(tmp_path, capsys) -> None:
    from xmodal_bench.report.results import find_results

    low_tau = _run(tmp_path, "a-s0", _with_tau(_ranks(0), 0, 0.30), method="clip")
    high_tau = _run(tmp_path, "b-s0", _with_tau(_ranks(0), 1, 0.45), method="bcls")
    older = _run(tmp_path, "c-s0", _ranks(0), method="tgdt")  # saved before taus were: no tau arrays
    assert main(["compare", str(low_tau), str(low_tau), "--json", "--resamples", "200"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["metrics"]}
    assert {"kendall_tau", "kendall_tau/t2i", "kendall_tau/i2t"} <= set(rows)
    assert rows["kendall_tau"]["difference"] == 0 and rows["kendall_tau"]["p"] == 1.0
    assert main(["compare", str(low_tau), str(high_tau), "--json", "--resamples", "200"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["metrics"] if r["metric"] == "kendall_tau")
    assert row["difference"] < 0 and row["high"] < 0 and row["p"] < 0.01 and row["digits"] == 3
    assert main(["compare", str(low_tau), str(older), "--json", "--resamples", "200"]) == 0
    rows = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["metrics"]}
    assert "rsum" in rows and "kendall_tau" not in rows  # what both runs have is compared
    board = {row.method: row for row in build_leaderboard(find_results(tmp_path), "synth").rows}
    for method in ("clip", "bcls"):
        low, high = board[method].intervals["kendall_tau"]
        assert low <= board[method].mean("kendall_tau") <= high
    assert "kendall_tau" not in board["clip"].not_below_best  # 0.30 vs 0.45 on 180 queries: clearly below
    assert "kendall_tau" not in board["tgdt"].intervals and "rsum" in board["tgdt"].intervals


def test_each_query_set_is_drawn_alone_and_a_run_of_another_split_is_refused() -> None:
    ranks = _ranks(0)
    alone = draw({"t2i": ranks["t2i"]}, resamples=20)
    both = draw({**ranks, "tau/i2t": torch.zeros(60)}, resamples=20)
    assert torch.equal(alone[("t2i", 300)], both[("t2i", 300)])  # other sets do not move its draw
    assert not torch.equal(both[("i2t", 60)][:, :60], both[("t2i", 300)][:, :60])
    grown = extend(alone, ranks, "a run", resamples=20)
    assert set(grown) == {("t2i", 300), ("i2t", 60)} and torch.equal(grown[("i2t", 60)], both[("i2t", 60)])
    for seed in (-3, 2**40):  # any int seed the command line takes
        assert draw(ranks, resamples=2, seed=seed)[("t2i", 300)].shape == (2, 300)
    with pytest.raises(UserError, match="t2i: 299 vs 300"):
        extend(grown, {"t2i": ranks["t2i"][:299]}, "a run", resamples=20)


def test_a_bootstrap_file_of_the_former_draw_is_resampled_again(tmp_path) -> None:
    from xmodal_bench.report import significance

    protocol = get_protocol("caption")
    folder = _run(tmp_path, "a-s0", _ranks(0))
    significance.save_bootstrap(folder, protocol, {"global": _ranks(0)}, resamples=20)
    keys = list(protocol.metrics(_ranks(0)))
    assert significance.saved_distribution(folder, "global", keys, resamples=20) is not None
    with np.load(folder / significance.BOOTSTRAP_FILE) as data:
        arrays = {k: data[k] for k in data.files if k != "draw"}  # as the first version wrote it
    np.savez(folder / significance.BOOTSTRAP_FILE, **arrays)
    assert significance.saved_distribution(folder, "global", keys, resamples=20) is None


def test_compare_pairs_two_inference_modes_of_one_run(tmp_path, capsys) -> None:
    ranks = _ranks(0)
    folder = _run(tmp_path, "a", ranks)
    save_ranks(folder, {"global": ranks, "fused": _nudged(ranks, 60)})  # fused: 60 queries one place lower
    args = ["compare", str(folder), str(folder), "--mode", "fused", "--mode-b", "global", "--json"]
    assert main([*args, "--resamples", "200"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["mode_a"], out["mode_b"]) == ("fused", "global")
    rows = {r["metric"]: r for r in out["metrics"]}
    protocol = get_protocol("caption")
    expected = protocol.metrics(_nudged(ranks, 60))["t2i_r1"] - protocol.metrics(ranks)["t2i_r1"]
    assert rows["t2i_r1"]["difference"] == pytest.approx(expected) and expected < 0
    assert rows["t2i_r1"]["high"] <= 0 and rows["i2t_r1"]["difference"] == 0  # i2t ranks are the same
    assert main(["compare", str(folder), str(folder), "--mode-b", "local"]) == 2
    assert "no ranks for mode 'local'" in capsys.readouterr().err
