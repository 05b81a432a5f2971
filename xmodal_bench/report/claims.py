"""Each paper's headline claim and the suite's minimal expectations, checked on the runs at hand.

A claim compares leaderboard rows (`report.tables.Row`: one value per seed). Its verdict:
- `holds`: the difference is in the claimed direction and larger than the seed spread,
  sqrt(std_a^2 + std_b^2) over seeds (0 with one seed);
- `does not hold`: it is in the other direction by more than that spread;
- `within seed spread`: neither.
"Close to" holds at `CLOSE` (95%) of the other row or more. A claim whose rows are missing
(the method or dataset was not run) is left out. The same checks serve the README's Claims table
and `claims.md` beside the leaderboards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from xmodal_bench.report.tables import Row, build_rows

HOLDS, FAILS, UNCLEAR = "holds", "does not hold", "within seed spread"
# settings that make a row a variant of its method (ablations, other method values), not the method
VARIANT_KEYS = ("clip.", "irra.", "tgdt.", "aladin.", "bcls.", "backbone.pretrained=run:")
CLOSE = 0.95  # "comes close to": at least this fraction of the other row
MIN_MATCHING = 0.8  # minimal expectation: ALADIN matching / alignment


@dataclass(frozen=True)
class Verdict:
    """One checked statement: what was compared, the numbers, the seeds and the verdict."""

    paper: str
    dataset: str
    statement: str
    numbers: str
    seeds: int
    verdict: str
    expectation: bool = False  # a minimal expectation (a bug when broken), not a paper's claim


def _variant(row: Row) -> tuple[str, ...]:
    return tuple(c for c in row.changes if c.startswith(VARIANT_KEYS))


def find_row(rows: Sequence[Row], method: str, mode: str | None = None, variant: str = "") -> Row | None:
    """The row of `method` (its primary mode unless `mode`), plain or with the variant setting."""
    for row in rows:
        if row.method != method or row.zero_shot or (row.mode != mode if mode else not row.primary):
            continue
        changes = _variant(row)
        if (variant and any(c.startswith(variant) for c in changes)) or (not variant and not changes):
            return row
    return None


def zero_shot_row(rows: Sequence[Row]) -> Row | None:
    return next((row for row in rows if row.zero_shot and row.primary), None)


def _fmt(row: Row, key: str) -> str:
    mean, std = row.mean(key), row.std(key)
    digits = 3 if key in ("kendall_tau", "t2i_ms") else 1
    text = f"{mean:.{digits}f}"
    return f"{text} ± {std:.{digits}f}" if std is not None else text


def spread(a: Row, b: Row, key: str) -> float:
    return math.hypot(a.std(key) or 0.0, b.std(key) or 0.0)


def compare(a: Row, b: Row, key: str) -> str:
    """Verdict of 'a is above b' on `key` (see the module docstring)."""
    diff, noise = a.mean(key) - b.mean(key), spread(a, b, key)
    return HOLDS if diff > noise else FAILS if diff < -noise else UNCLEAR


def _has(*pairs: tuple[Row | None, str]) -> bool:
    return all(row is not None and row.mean(key) is not None for row, key in pairs)


def _both(*verdicts: str) -> str:
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else UNCLEAR


def _headline(rows: Sequence[Row]) -> str:
    return "rsum" if any(r.mean("rsum") is not None for r in rows) else "r1"


def aladin_claims(rows: Sequence[Row], dataset: str) -> list[Verdict]:
    match, align, two = (find_row(rows, "aladin", m) for m in ("matching", "alignment", "two_stage"))
    key, out = _headline(rows), []
    if _has((match, key), (align, key)):
        ratio = match.mean(key) / align.mean(key)
        out.append(
            Verdict(
                "ALADIN",
                dataset,
                f"the matching embedding comes close to the alignment head ({key})",
                f"{_fmt(match, key)} vs {_fmt(align, key)} ({ratio:.0%})",
                match.seeds,
                HOLDS if ratio >= CLOSE else FAILS,
            )
        )
        out.append(
            Verdict(
                "expectation",
                dataset,
                "ALADIN matching is at least 80% of its alignment",
                f"{ratio:.0%}",
                match.seeds,
                HOLDS if ratio >= MIN_MATCHING else FAILS,
                expectation=True,
            )
        )
    if _has((two, key), (align, key), (two, "t2i_ms"), (align, "t2i_ms")):
        level = compare(align, two, key)  # two-stage not below alignment: alignment not clearly above
        cheaper = two.mean("t2i_ms") < align.mean("t2i_ms")
        verdict = HOLDS if level != HOLDS and cheaper else FAILS if level == HOLDS else UNCLEAR
        out.append(
            Verdict(
                "ALADIN",
                dataset,
                "two-stage matches alignment at a fraction of its latency",
                f"{key} {_fmt(two, key)} vs {_fmt(align, key)}; t2i "
                f"{two.mean('t2i_ms'):.3f} vs {align.mean('t2i_ms'):.3f} ms/query",
                two.seeds,
                verdict,
            )
        )
    return out


def tgdt_claims(rows: Sequence[Row], dataset: str) -> list[Verdict]:
    fused, glob, local = (find_row(rows, "tgdt", m) for m in ("fused", "global", "local"))
    key, out = _headline(rows), []
    if _has((fused, key), (glob, key)):
        beats = compare(fused, glob, key)
        verdict, statement = beats, "fused beats global"
        numbers = f"fused {_fmt(fused, key)}, global {_fmt(glob, key)}"
        if _has((local, key), (local, "t2i_ms"), (fused, "t2i_ms")):
            close = fused.mean(key) >= CLOSE * local.mean(key)
            near = HOLDS if close and fused.mean("t2i_ms") < local.mean("t2i_ms") else FAILS
            verdict, statement = (
                _both(beats, near),
                f"{statement} and nears local at a fraction of its latency",
            )
            numbers += (
                f", local {_fmt(local, key)}; t2i {fused.mean('t2i_ms'):.3f} vs "
                f"{local.mean('t2i_ms'):.3f} ms/query"
            )
        out.append(
            Verdict(
                "TGDT",
                dataset,
                statement,
                numbers,
                fused.seeds,
                verdict,
            )
        )
        out.append(
            Verdict(
                "expectation",
                dataset,
                "TGDT fused is not below TGDT global",
                f"{_fmt(fused, key)} vs {_fmt(glob, key)}",
                fused.seeds,
                FAILS if beats == FAILS else HOLDS,
                expectation=True,
            )
        )
    return out


def irra_claims(rows: Sequence[Row], dataset: str) -> list[Verdict]:
    irra, clip = find_row(rows, "irra"), find_row(rows, "clip")
    if not _has((irra, "r1"), (clip, "r1"), (irra, "map"), (clip, "map")):
        return []
    ablation = []
    for name in ("[sdm]", "[sdm,id]"):
        row = find_row(rows, "irra", variant=f"irra.losses={name}")
        if row is not None and row.mean("r1") is not None:
            ablation.append(f"{name.strip('[]').replace(',', '+')} {_fmt(row, 'r1')}")
    numbers = f"R@1 {_fmt(irra, 'r1')} vs {_fmt(clip, 'r1')}, mAP {_fmt(irra, 'map')} vs {_fmt(clip, 'map')}"
    if ablation:
        numbers += f"; ablation R@1: {', '.join(ablation)}, sdm+id+mlm {_fmt(irra, 'r1')}"
    return [
        Verdict(
            "IRRA",
            dataset,
            "beats the CLIP fine-tune control (R@1 and mAP)",
            numbers,
            irra.seeds,
            _both(compare(irra, clip, "r1"), compare(irra, clip, "map")),
        )
    ]


def bcls_claims(rows: Sequence[Row], dataset: str) -> list[Verdict]:
    key, out = _headline(rows), []
    for base in sorted({r.method for r in rows if "+" not in r.method and not r.zero_shot}):
        plain, plus = find_row(rows, base), find_row(rows, f"{base}+bcls")
        if not _has((plain, "kendall_tau"), (plus, "kendall_tau"), (plain, key), (plus, key)):
            continue
        tau = compare(plus, plain, "kendall_tau")
        recall = compare(plain, plus, key)  # "not lowering": the base not clearly above
        verdict = FAILS if tau == FAILS or recall == HOLDS else HOLDS if tau == HOLDS else UNCLEAR
        out.append(
            Verdict(
                "BCLS",
                dataset,
                f"raises Kendall tau over {base} without lowering {key}",
                f"tau {_fmt(plus, 'kendall_tau')} vs {_fmt(plain, 'kendall_tau')}, "
                f"{key} {_fmt(plus, key)} vs {_fmt(plain, key)}",
                plus.seeds,
                verdict,
            )
        )
    return out


def start_expectations(rows: Sequence[Row], dataset: str) -> list[Verdict]:
    """No method's primary row ends below the start's zero-shot by more than its seed spread."""
    start, key, out = zero_shot_row(rows), _headline(rows), []
    if start is None or start.mean(key) is None:
        return out
    for row in rows:
        if row.zero_shot or not row.primary or _variant(row) or row.mean(key) is None:
            continue
        below = start.mean(key) - row.mean(key) > (row.std(key) or 0.0)
        out.append(
            Verdict(
                "expectation",
                dataset,
                f"{row.method} ({row.mode}) is not below the zero-shot start",
                f"{_fmt(row, key)} vs {_fmt(start, key)}",
                row.seeds,
                FAILS if below else HOLDS,
                expectation=True,
            )
        )
    return out


CHECKS: tuple[Callable[[Sequence[Row], str], list[Verdict]], ...] = (
    aladin_claims,
    tgdt_claims,
    irra_claims,
    bcls_claims,
    start_expectations,
)


def check_claims(records: Sequence[dict[str, Any]]) -> list[Verdict]:
    """Every claim and expectation measurable on `records`, dataset by dataset."""
    verdicts = []
    for dataset in sorted({r["dataset"] for r in records}):
        rows = build_rows([r for r in records if r["dataset"] == dataset])
        for check in CHECKS:
            verdicts += check(rows, dataset)
    return verdicts


def claims_markdown(verdicts: Sequence[Verdict]) -> str:
    """The Claims table (papers first, then the minimal expectations)."""
    lines = [
        "# Claims",
        "",
        "Each paper's headline claim measured on these runs (mean ± std over seeds); `holds` means the",
        "difference is in the claimed direction and beyond the seed spread. Minimal expectations",
        "(below) are bugs when broken. Generated by `xmodal-bench leaderboard`; do not edit by hand.",
        "",
        "| paper | dataset | claim | measured | seeds | verdict |",
        "| --- | --- | --- | --- | ---: | --- |",
    ]
    ordered = [v for v in verdicts if not v.expectation] + [v for v in verdicts if v.expectation]
    for v in ordered:
        lines.append(f"| {v.paper} | {v.dataset} | {v.statement} | {v.numbers} | {v.seeds} | {v.verdict} |")
    return "\n".join(lines) + "\n"
