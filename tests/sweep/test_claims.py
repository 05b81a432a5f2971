"""The Claims table: each verdict follows from the seeds' numbers, missing rows drop their claim."""

from __future__ import annotations

import json

from xmodal_bench.report.claims import FAILS, HOLDS, UNCLEAR, check_claims, claims_markdown
from xmodal_bench.report.leaderboard import write_leaderboards
from xmodal_bench.report.results import RESULTS_SCHEMA


def _record(method, seed, modes, dataset="synth", changes=(), zero_shot=False, primary=None, tau=None):
    """A minimal results record: `modes` maps mode -> {metric: value}, optional t2i_ms inside."""
    entries = {}
    for mode, values in modes.items():
        values = dict(values)
        latency = values.pop("t2i_ms", None)
        entries[mode] = {"metrics": values}
        if latency is not None:
            entries[mode]["latency_ms"] = {"t2i_ms": latency}
        if tau is not None:
            entries[mode]["kendall_tau"] = {"kendall_tau": tau}
    primary = primary or next(iter(modes))
    return {
        "schema": RESULTS_SCHEMA,
        "method": method,
        "dataset": dataset,
        "protocol": "person" if dataset == "synth_reid" else "caption",
        "scale": "tiny",
        "seed": seed,
        "config_id": f"{method}-{'-'.join(changes)}",
        "changes": list(changes),
        "primary_mode": primary,
        "metrics": entries[primary]["metrics"],
        "modes": entries,
        "training": {"zero_shot": zero_shot},
        "config": {"backbone": {"model": "xmb-tiny", "pretrained": "synthclip"}},
    }


def _verdict(verdicts, statement_part, dataset="synth"):
    (match,) = [v for v in verdicts if statement_part in v.statement and v.dataset == dataset]
    return match


def test_tgdt_claim_and_expectation_follow_the_seed_spread() -> None:
    records = []
    for seed, (fused, glob, local) in enumerate([(510, 500, 515), (512, 499, 516), (511, 501, 514)]):
        modes = {
            "fused": {"rsum": fused, "t2i_ms": 0.3},
            "global": {"rsum": glob, "t2i_ms": 0.01},
            "local": {"rsum": local, "t2i_ms": 1.0},
        }
        records.append(_record("tgdt", seed, modes))
    verdicts = check_claims(records)
    claim = _verdict(verdicts, "fused beats global")
    assert claim.verdict == HOLDS and claim.seeds == 3  # 11 above global, local 4 above: "nears"
    assert "fused 511.0 ± 1.0" in claim.numbers
    assert _verdict(verdicts, "not below TGDT global").verdict == HOLDS
    # fused clearly below global: claim and expectation both broken
    broken = [_record("tgdt", s, {"fused": {"rsum": 480 + s}, "global": {"rsum": 500 + s}}) for s in range(3)]
    verdicts = check_claims(broken)
    assert _verdict(verdicts, "fused beats global").verdict == FAILS
    assert _verdict(verdicts, "not below TGDT global").verdict == FAILS


def test_a_difference_inside_the_spread_is_not_a_verdict() -> None:
    records = [
        _record("tgdt", s, {"fused": {"rsum": v}, "global": {"rsum": g}})
        for s, (v, g) in enumerate([(500, 495), (490, 500), (505, 497)])
    ]
    verdicts = check_claims(records)
    assert _verdict(verdicts, "fused beats global").verdict == UNCLEAR
    assert _verdict(verdicts, "not below TGDT global").verdict == HOLDS


def test_aladin_ratio_and_the_zero_shot_expectation() -> None:
    start = [_record("zeroshot", 0, {"global": {"rsum": 496.0}}, zero_shot=True)]
    aladin = [
        _record(
            "aladin",
            s,
            {
                "matching": {"rsum": 370.0 + s, "t2i_ms": 0.01},
                "alignment": {"rsum": 415.0, "t2i_ms": 1.0},
                "two_stage": {"rsum": 420.0, "t2i_ms": 0.4},
            },
        )
        for s in range(2)
    ]
    verdicts = check_claims(start + aladin)
    assert _verdict(verdicts, "comes close").verdict == FAILS  # 89% < 95%
    assert _verdict(verdicts, "at least 80%").verdict == HOLDS
    assert _verdict(verdicts, "two-stage matches alignment").verdict == HOLDS
    below = _verdict(verdicts, "aladin (matching) is not below the zero-shot start")
    assert below.verdict == FAILS and below.expectation


def test_irra_against_clip_with_its_ablation_and_bcls_against_its_base() -> None:
    reid = "synth_reid"
    records = []
    for s in range(3):
        records.append(_record("clip", s, {"global": {"r1": 20.0 + s, "map": 25.0}}, reid, tau=0.20))
        records.append(_record("irra", s, {"global": {"r1": 26.0 + s, "map": 30.0 + s}}, reid))
        records.append(
            _record("irra", s, {"global": {"r1": 23.0, "map": 27.0}}, reid, changes=["irra.losses=[sdm]"])
        )
        records.append(_record("clip+bcls", s, {"global": {"r1": 20.5 + s, "map": 25.0}}, reid, tau=0.3))
    verdicts = check_claims(records)
    irra = _verdict(verdicts, "CLIP fine-tune control", reid)
    assert irra.verdict == HOLDS and "sdm 23.0" in irra.numbers
    bcls = _verdict(verdicts, "raises Kendall tau over clip", reid)
    assert bcls.verdict == HOLDS and "tau 0.300 ± 0.000 vs 0.200 ± 0.000" in bcls.numbers
    # a BCLS that lowers R@1 beyond the spread does not hold even with a higher tau
    lowered = [r for r in records if r["method"] != "clip+bcls"] + [
        _record("clip+bcls", s, {"global": {"r1": 10.0 + s, "map": 25.0}}, reid, tau=0.3) for s in range(3)
    ]
    assert _verdict(check_claims(lowered), "raises Kendall tau", reid).verdict == FAILS


def test_missing_rows_drop_their_claims_and_the_table_is_written(tmp_path) -> None:
    assert check_claims([_record("clip", 0, {"global": {"rsum": 400.0}})]) == []
    runs = tmp_path / "runs"
    for s in range(2):
        record = _record("tgdt", s, {"fused": {"rsum": 510.0 + s}, "global": {"rsum": 480.0}})
        folder = runs / "synth" / "tgdt" / f"tiny-x-seed{s}"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(record))
    out = tmp_path / "boards"
    write_leaderboards(runs, out)
    text = (out / "claims.md").read_text()
    assert (
        "| TGDT | synth | fused beats global |" in text and "| holds |" in text
    )  # no local row: no "nears local"
    assert "claims.md" in (out / "README.md").read_text()
    assert claims_markdown([]).startswith("# Claims")
