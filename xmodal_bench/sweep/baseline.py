"""The CI regression baseline (`leaderboards/ci_baseline.json`): expected metrics and tolerances.

For every (dataset, method) of the CI sweep and every metric of every inference mode (all
higher-is-better figures: recalls, rSum, mAP, mINP; ranks are left out) the baseline holds the
expected value and a tolerance. The check fails when a metric falls below `expected - tolerance`
and says which metric fell and by how much; a run of the sweep missing from the baseline fails
too (a new method joins by rerunning `--update-baseline`).

Where the numbers come from: `xmodal-bench sweep --config benchmarks/sweeps/ci.yaml
--update-baseline` runs the sweep's seeds plus its `baseline.noise_seeds`; expected = the mean
over the sweep's own seeds (what CI reruns: on the same machine it reproduces them exactly),
tolerance = max(`min_tolerance`, `sigmas` x the std over all those seeds). The seed-to-seed
spread stands in for what CI cannot control: another CPU, another BLAS, another thread count
change the floating-point sums, and a few hundred steps of training turn that into differences
of the same order as a change of seed.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.errors import UserError
from xmodal_bench.report.results import git_sha, hardware, versions

if TYPE_CHECKING:
    from xmodal_bench.sweep.spec import SweepSpec

BASELINE_SCHEMA = 1
UPDATE_HINT = "xmodal-bench sweep --config benchmarks/sweeps/ci.yaml --update-baseline"


def checked_metrics(record: dict[str, Any]) -> dict[str, float]:
    """`{mode}/{metric}` -> value for every higher-is-better metric of every mode of a record."""
    out = {}
    for mode, entry in record["modes"].items():
        for name, value in entry["metrics"].items():
            if isinstance(value, (int, float)) and not name.endswith(("medr", "meanr")):
                out[f"{mode}/{name}"] = float(value)
    return out


def entry_key(record: dict[str, Any]) -> str:
    return f"{record['dataset']}/{record['method']}"


def _group(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (entry_key(r), r["seed"])):
        groups[entry_key(record)].append(record)
    return dict(groups)


def build_baseline(records: list[dict[str, Any]], spec: SweepSpec) -> dict[str, Any]:
    """The baseline from a sweep's records: those of `spec.seeds` give the expected values, all of
    them (with the noise seeds) the spread."""
    assert spec.baseline is not None
    rule = spec.baseline
    entries = {}
    for key, group in _group(records).items():
        ci = [r for r in group if r["seed"] in spec.seeds]
        if not ci:
            continue
        metrics = {}
        for name in checked_metrics(ci[0]):
            expected = statistics.fmean(checked_metrics(r)[name] for r in ci)
            spread = [checked_metrics(r)[name] for r in group if name in checked_metrics(r)]
            std = statistics.stdev(spread) if len(spread) > 1 else 0.0
            metrics[name] = {
                "expected": round(expected, 4),
                "tolerance": round(max(rule.min_tolerance, rule.sigmas * std), 4),
                "seed_std": round(std, 4),
            }
        entries[key] = {
            "config_id": ci[0].get("config_id"),
            "seeds": sorted(r["seed"] for r in ci),
            "noise_seeds": sorted(r["seed"] for r in group if r["seed"] not in spec.seeds),
            "metrics": metrics,
        }
    return {
        "schema": BASELINE_SCHEMA,
        "sweep": str(spec.path),
        "rule": f"tolerance = max({rule.min_tolerance}, {rule.sigmas} x std over seeds {sorted({r['seed'] for r in records})})",
        "update_with": UPDATE_HINT,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(Path(__file__).parent),
        "versions": versions(),
        "hardware": hardware(),
        "entries": entries,
    }


def write_baseline(path: Path, baseline: dict[str, Any]) -> None:
    atomic_write_json(path, baseline)


def load_baseline(path: Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"no regression baseline at {path}: create it with `{UPDATE_HINT}`") from None
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: unreadable baseline ({exc}); recreate it with `{UPDATE_HINT}`") from None
    if not isinstance(data, dict) or data.get("schema") != BASELINE_SCHEMA:
        raise UserError(f"{path}: baseline of another format; recreate it with `{UPDATE_HINT}`")
    return data


@dataclass
class CheckResult:
    problems: list[str] = field(default_factory=list)  # each one fails the check
    notes: list[str] = field(default_factory=list)  # informative only

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        return "\n".join([*self.problems, *(f"note: {n}" for n in self.notes)])


def check_baseline(records: list[dict[str, Any]], baseline: dict[str, Any]) -> CheckResult:
    """Compare a sweep's records (mean over seeds per dataset/method) with the baseline."""
    result = CheckResult()
    entries = baseline.get("entries", {})
    groups = _group(records)
    for key, group in groups.items():
        entry = entries.get(key)
        if entry is None:
            result.problems.append(f"{key}: no baseline entry; add one with `{UPDATE_HINT}`")
            continue
        if entry.get("config_id") and group[0].get("config_id") != entry["config_id"]:
            result.notes.append(
                f"{key}: config changed since the baseline ({entry['config_id']} -> "
                f"{group[0].get('config_id')}); if the numbers moved on purpose, `{UPDATE_HINT}`"
            )
        values = defaultdict(list)
        for record in group:
            for name, value in checked_metrics(record).items():
                values[name].append(value)
        for name, expect in entry["metrics"].items():
            if name not in values:
                result.problems.append(
                    f"{key} {name}: missing from the results (expected {expect['expected']:.2f})"
                )
                continue
            got = statistics.fmean(values[name])
            expected, tolerance = float(expect["expected"]), float(expect["tolerance"])
            drop = expected - got
            if drop > tolerance:
                relative = f", {100 * drop / expected:.1f}%" if expected else ""
                result.problems.append(
                    f"{key} {name} fell by {drop:.2f}{relative}: {got:.2f} < expected {expected:.2f} "
                    f"- tolerance {tolerance:.2f}"
                )
            elif -drop > tolerance:
                result.notes.append(
                    f"{key} {name} improved by {-drop:.2f} ({got:.2f} vs {expected:.2f}); "
                    f"raise the bar with `{UPDATE_HINT}`"
                )
    for key in sorted(set(entries) - set(groups)):
        result.notes.append(f"{key}: in the baseline but not run in this sweep")
    return result
