"""Sweep files (`benchmarks/sweeps/NAME.yaml`): a grid of methods x datasets x seeds, one protocol.

    methods: [clip, irra, tgdt, aladin]   # method specs as for `bench --method` (clip+bcls works)
    datasets: [synth, synth_reid]         # names from benchmarks/data/
    seeds: [0, 1, 2]
    scale: tiny                           # tiny | base (default tiny)
    overrides: [trainer.max_epochs=4]     # key=value for every run
    method_overrides: {irra: [irra.id_loss=false]}   # extra key=value per method ...
    dataset_overrides: {synth_reid: [data.batch_size=64]}  # ... and per dataset
    data_root: data                       # optional: default data/ (as bench)
    runs_dir: runs                        # optional: default runs/
    leaderboards_dir: leaderboards        # optional: default leaderboards/
    timeout_s: 3600                       # optional: a run taking longer is killed and counted as failed
    threads: 1                            # optional: CPU threads per run (OMP_NUM_THREADS); default torch's
    extends: synth                        # optional: start from another sweep file, then these keys
    baseline:                             # optional: the CI regression gate (see sweep.baseline)
      path: leaderboards/ci_baseline.json
      noise_seeds: [1, 2]                 # extra seeds run by --update-baseline to measure noise
      sigmas: 3                           # tolerance = max(min_tolerance, sigmas x std over seeds)
      min_tolerance: 2.0

Every run of the grid is one `RunRequest` (`run.request`), the same value `xmodal-bench bench
--method M --data D --scale S --seed N [--data-root ..] [--runs-dir ..] overrides...` builds,
with overrides in this order: shared, per method, per dataset, then the sweep command line's
own. The runs are composed here, before anything starts, so an unknown method or dataset, a bad
override, an impossible value or a typo in a section name stops the sweep at once with one line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig

from xmodal_bench.config import SCALES, benchmarks_dir, parse_overrides, read_layer
from xmodal_bench.errors import UserError
from xmodal_bench.registry import check_method_spec, static_names
from xmodal_bench.run.folders import run_dir_for, run_id_for
from xmodal_bench.run.request import RunRequest

KEYS = {
    "name",
    "methods",
    "datasets",
    "seeds",
    "scale",
    "overrides",
    "method_overrides",
    "dataset_overrides",
    "data_root",
    "runs_dir",
    "leaderboards_dir",
    "timeout_s",
    "threads",
    "baseline",
    "about",
    "extends",
}
BASELINE_KEYS = {"path", "noise_seeds", "sigmas", "min_tolerance"}


@dataclass(frozen=True)
class BaselineSpec:
    path: Path
    noise_seeds: list[int] = field(default_factory=list)
    sigmas: float = 3.0
    min_tolerance: float = 2.0


@dataclass(frozen=True)
class SweepSpec:
    name: str
    path: Path
    methods: list[str]
    datasets: list[str]
    seeds: list[int]
    scale: str = "tiny"
    overrides: list[str] = field(default_factory=list)
    method_overrides: dict[str, list[str]] = field(default_factory=dict)
    dataset_overrides: dict[str, list[str]] = field(default_factory=dict)
    data_root: str | None = None
    runs_dir: str | None = None
    leaderboards_dir: str | None = None
    timeout_s: float | None = None
    threads: int | None = None
    baseline: BaselineSpec | None = None


@dataclass(frozen=True)
class PlannedRun:
    """One cell of the grid: the request, its composed config, and where its results go."""

    request: RunRequest
    cfg: DictConfig
    run_id: str
    run_dir: Path
    resume: bool = False  # continue from the run's last checkpoint when a killed sweep left one

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def dataset(self) -> str:
        return self.request.dataset

    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def label(self) -> str:
        return f"{self.method} on {self.dataset} seed {self.seed}"


def resolve_sweep_path(name_or_path: str) -> Path:
    """`synth` -> benchmarks/sweeps/synth.yaml; a path is taken as is."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise UserError(f"sweep file not found: {path} (sweeps: {', '.join(list_sweeps()) or 'none'})")
        return path
    candidate = benchmarks_dir() / "sweeps" / f"{name_or_path}.yaml"
    if not candidate.is_file():
        raise UserError(f"unknown sweep {name_or_path!r}; known sweeps: {', '.join(list_sweeps()) or 'none'}")
    return candidate


def list_sweeps() -> list[str]:
    return sorted(p.stem for p in (benchmarks_dir() / "sweeps").glob("*.yaml"))


def _strings(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise UserError(f"{where}: expected a list of names")
    return [str(v) for v in value]


def _override_list(value: Any, where: str) -> list[str]:
    items = _strings(value, where)
    try:
        return parse_overrides(items)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _override_map(value: Any, where: str, allowed: list[str]) -> dict[str, list[str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where}: expected a mapping name -> [key=value, ...]")
    unknown = [k for k in value if k not in allowed]
    if unknown:
        raise UserError(f"{where}: {unknown[0]!r} is not in the sweep's list ({', '.join(allowed)})")
    return {k: _override_list(v, f"{where}.{k}") for k, v in value.items()}


def _baseline(value: Any, where: str) -> BaselineSpec | None:
    if value is None:
        return None
    if isinstance(value, str):
        value = {"path": value}
    if not isinstance(value, dict) or "path" not in value or set(value) - BASELINE_KEYS:
        raise UserError(f"{where}: expected a mapping with path and optionally {', '.join(BASELINE_KEYS)}")
    try:
        seeds = [int(s) for s in value.get("noise_seeds") or []]
        return BaselineSpec(
            Path(value["path"]),
            seeds,
            float(value.get("sigmas", 3.0)),
            float(value.get("min_tolerance", 2.0)),
        )
    except (TypeError, ValueError) as exc:
        raise UserError(f"{where}: {exc}") from None


def load_sweep(name_or_path: str | Path) -> SweepSpec:
    """Read and check a sweep file (the methods and datasets are checked by `plan_runs`)."""
    path = resolve_sweep_path(str(name_or_path))
    doc = _extended(path)
    unknown = sorted(set(doc) - KEYS)
    if unknown:
        raise UserError(f"{path}: unknown key {unknown[0]!r}; known keys: {', '.join(sorted(KEYS))}")
    methods = _strings(doc.get("methods"), f"{path}: methods")
    datasets = _strings(doc.get("datasets"), f"{path}: datasets")
    if not methods or not datasets:
        raise UserError(f"{path}: a sweep needs at least one method and one dataset")
    seeds_raw = doc.get("seeds", [0])
    seeds_raw = [seeds_raw] if isinstance(seeds_raw, int) else seeds_raw
    if not isinstance(seeds_raw, list) or not seeds_raw or not all(isinstance(s, int) for s in seeds_raw):
        raise UserError(f"{path}: seeds must be a list of integers")
    scale = str(doc.get("scale", "tiny"))
    if scale not in SCALES:
        raise UserError(f"{path}: scale {scale!r}; choose one of {', '.join(SCALES)}")
    timeout = doc.get("timeout_s")
    if timeout is not None and (not isinstance(timeout, (int, float)) or timeout <= 0):
        raise UserError(f"{path}: timeout_s must be a positive number of seconds")
    threads = doc.get("threads")
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool) or threads < 1):
        raise UserError(f"{path}: threads must be a positive integer (CPU threads per run)")
    return SweepSpec(
        name=str(doc.get("name") or path.stem),
        path=path,
        methods=list(dict.fromkeys(methods)),
        datasets=list(dict.fromkeys(datasets)),
        seeds=list(dict.fromkeys(seeds_raw)),
        scale=scale,
        overrides=_override_list(doc.get("overrides"), f"{path}: overrides"),
        method_overrides=_override_map(doc.get("method_overrides"), f"{path}: method_overrides", methods),
        dataset_overrides=_override_map(doc.get("dataset_overrides"), f"{path}: dataset_overrides", datasets),
        data_root=doc.get("data_root"),
        runs_dir=doc.get("runs_dir"),
        leaderboards_dir=doc.get("leaderboards_dir"),
        timeout_s=float(timeout) if timeout is not None else None,
        threads=threads,
        baseline=_baseline(doc.get("baseline"), f"{path}: baseline"),
    )


def _extended(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The sweep file's keys over those of the file it `extends` (recursively; each key replaced whole)."""
    doc = _read_yaml(path)
    parent = doc.pop("extends", None)
    if parent is None:
        return doc
    if not isinstance(parent, str):
        raise UserError(f"{path}: extends must name one sweep file")
    relative = path.parent / parent  # a file name is read next to the file that extends it
    parent_path = resolve_sweep_path(str(relative) if relative.is_file() else parent).resolve()
    if parent_path in (*seen, path.resolve()):
        raise UserError(f"{path}: extends {parent!r} forms a cycle")
    inherited = _extended(parent_path, (*seen, path.resolve()))
    inherited.pop("name", None)  # a sweep is named after its own file unless it says otherwise
    # per-name overrides inherited for names this file dropped from its lists no longer apply
    for names, per_name in (("methods", "method_overrides"), ("datasets", "dataset_overrides")):
        if names in doc and per_name not in doc and isinstance(inherited.get(per_name), dict):
            kept = _strings(doc[names], f"{path}: {names}")
            inherited[per_name] = {k: v for k, v in inherited[per_name].items() if k in kept}
    return {**inherited, **doc}


def _read_yaml(path: Path) -> dict[str, Any]:
    """The sweep file as a mapping; a YAML syntax error becomes one line naming where it is."""
    try:
        return read_layer(path)
    except UserError as exc:
        cause = exc.__cause__
        if not isinstance(cause, yaml.YAMLError):
            raise
        mark = getattr(cause, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(cause, "problem", None) or type(cause).__name__
        raise UserError(f"{path}: not valid YAML{where}: {problem}") from None


def unknown_methods(spec: SweepSpec) -> list[str]:
    """The method specs of the sweep that are not registered (not landed yet, or a typo)."""
    missing = []
    for method in spec.methods:
        try:
            check_method_spec(method)
        except UserError:
            missing.append(method)
    return missing


def run_request(
    spec: SweepSpec, method: str, dataset: str, seed: int, extra: list[str], places: dict[str, str | None]
) -> RunRequest:
    """The request of one run of the grid."""
    overrides = [
        *spec.overrides,
        *spec.method_overrides.get(method, []),
        *spec.dataset_overrides.get(dataset, []),
        *extra,
    ]
    return RunRequest(method, dataset, spec.scale, seed, overrides=tuple(overrides), **places)


def check_runs(
    spec: SweepSpec,
    *,
    seeds: list[int] | None = None,
    extra_overrides: list[str] | None = None,
    data_root: str | None = None,
    runs_dir: str | None = None,
    leaderboards_dir: str | None = None,
    skip_unknown: bool = False,
) -> tuple[list[tuple[str, str, RunRequest]], list[str]]:
    """Every run's request, checked without importing torch (`RunRequest.check`), in grid order
    (dataset, method, seed): ([(method, dataset, request)], skipped unknown methods).

    Unknown methods are a UserError listing the known ones, unless `skip_unknown`.
    """
    missing = unknown_methods(spec)
    if missing and not skip_unknown:
        known = ", ".join(sorted(static_names()[0]))
        raise UserError(
            f"{spec.path}: method(s) not registered: {', '.join(missing)} (known methods: {known}); "
            "remove them from the sweep, or pass --skip-unknown to run the others"
        )
    extra = parse_overrides(list(extra_overrides or []))
    places = {
        "data_root": data_root or spec.data_root,
        "runs_dir": runs_dir or spec.runs_dir,
        "leaderboards_dir": leaderboards_dir or spec.leaderboards_dir,
    }
    requests = []
    for dataset in spec.datasets:
        for method in spec.methods:
            if method in missing:
                continue
            for seed in seeds if seeds is not None else spec.seeds:
                request = run_request(spec, method, dataset, seed, extra, places)
                try:
                    request.check()
                except UserError as exc:
                    raise UserError(f"{spec.path}: {method} on {dataset}: {exc}") from None
                requests.append((method, dataset, request))
    return requests, missing


def plan_runs(
    spec: SweepSpec,
    *,
    seeds: list[int] | None = None,
    extra_overrides: list[str] | None = None,
    data_root: str | None = None,
    runs_dir: str | None = None,
    leaderboards_dir: str | None = None,
    skip_unknown: bool = False,
) -> tuple[list[PlannedRun], list[str]]:
    """Compose every run of the grid (in order: dataset, method, seed). Returns (runs, skipped unknown methods).

    Every request is checked first (`check_runs`), so a mistake anywhere in the grid answers
    before the methods are imported. Unknown methods are a UserError, unless `skip_unknown`.
    """
    requests, missing = check_runs(
        spec,
        seeds=seeds,
        extra_overrides=extra_overrides,
        data_root=data_root,
        runs_dir=runs_dir,
        leaderboards_dir=leaderboards_dir,
        skip_unknown=skip_unknown,
    )
    runs = []
    for method, dataset, request in requests:
        try:
            cfg = request.compose()
        except UserError as exc:
            raise UserError(f"{spec.path}: {method} on {dataset}: {exc}") from None
        _check_source_order(spec, method, cfg)
        runs.append(PlannedRun(request, cfg, run_id_for(cfg), run_dir_for(cfg)))
    return runs, missing


def _check_source_order(spec: SweepSpec, method: str, cfg: DictConfig) -> None:
    """A run that starts from `run:SOURCE` must come after SOURCE's runs when the sweep trains them."""
    from xmodal_bench.run.warm_start import referenced_method

    source = referenced_method(cfg)
    if (
        source in spec.methods
        and source != method
        and spec.methods.index(source) > spec.methods.index(method)
    ):
        raise UserError(
            f"{spec.path}: {method} starts from run:{source}, so {source} must come before {method} in methods"
        )
