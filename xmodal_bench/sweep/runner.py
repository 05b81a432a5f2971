"""`xmodal-bench sweep`: run a grid of (method, dataset, seed) benchmark runs, then the leaderboards.

Each run is `python -m xmodal_bench bench ...` in a fresh subprocess, so Lightning's DDP
launcher (which re-executes the command line for every extra rank) works, memory is returned
between runs, and a crash is recorded instead of ending the sweep. Runs use the config's
`trainer.devices=auto` / `accelerator=auto` unless the sweep overrides them: every GPU of the
node (DDP) when there are several, else one device; `trainer.num_nodes` and the SLURM /
torchrun environment are Lightning's business (see the README's job script).

- A run whose `results.json` is already there (same config id, same seed) is skipped unless
  `--force`, and the others run with `bench --resume`: an interrupted sweep resumes where it
  stopped, a run it killed half-way from that run's last checkpoint (`--force` starts afresh).
- A failing run (non-zero exit, a timeout, no results written) is recorded in
  `{run_dir}/failure.json` with the end of its log; its full output is in `{run_dir}/sweep.log`.
  The sweep goes on; it ends with a summary table and exit status 1 if any run failed.
- The sweep's own record (every run's status and time) is `{runs_dir}/_sweeps/{name}.json`.
- At the end, every leaderboard is rebuilt from all results (`sweep.leaderboard`), and when the
  sweep file names a `baseline` the regression check runs (`sweep.baseline`), or with
  `--update-baseline` the baseline is rewritten from this sweep.

Under a multi-task launcher (SLURM `srun`, `torchrun`) every task runs the same sweep in lock
step (each bench run is one collective job); only global rank 0 writes the sweep's own files.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xmodal_bench.atomic import atomic_write_json
from xmodal_bench.errors import UserError
from xmodal_bench.sweep.results import RESULTS_FILE, read_results
from xmodal_bench.sweep.spec import PlannedRun, SweepSpec, load_sweep, plan_runs

FAILURE_FILE = "failure.json"
LOG_FILE = "sweep.log"
TAIL_LINES = 30


@dataclass
class Outcome:
    run: PlannedRun
    status: str  # ok | skipped | failed | planned (dry run)
    seconds: float = 0.0
    returncode: int | None = None
    error: str | None = None

    @property
    def record(self) -> dict[str, Any] | None:
        return read_results(self.run.run_dir / RESULTS_FILE)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.run.method,
            "dataset": self.run.dataset,
            "seed": self.run.seed,
            "run_id": self.run.run_id,
            "run_dir": str(self.run.run_dir),
            "status": self.status,
            "seconds": round(self.seconds, 2),
            "returncode": self.returncode,
            "error": self.error,
        }


@dataclass
class SweepReport:
    spec: SweepSpec
    outcomes: list[Outcome] = field(default_factory=list)
    unknown_methods: list[str] = field(default_factory=list)
    baseline_problems: list[str] = field(default_factory=list)
    baseline_notes: list[str] = field(default_factory=list)
    baseline_written: Path | None = None
    runs_dir: Path = Path("runs")
    leaderboards_dir: Path = Path("leaderboards")

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def records(self) -> list[dict[str, Any]]:
        """The results records of every run that has one (ran now or skipped as complete)."""
        return [r for r in (o.record for o in self.outcomes if o.status in ("ok", "skipped")) if r]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.baseline_problems


def launcher_rank() -> int:
    """This process's global rank under a multi-task launcher (torchrun, SLURM), else 0."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 0


# --------------------------------------------------------------------------------------------- one run


def _tail(text: str, lines: int = TAIL_LINES) -> list[str]:
    cleaned = [line.rstrip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    return cleaned[-lines:]


def _error_line(tail: list[str]) -> str:
    for line in reversed(tail):
        if "error" in line.lower() or "exception" in line.lower() or line.startswith("RuntimeError"):
            return line.strip()
    return tail[-1].strip() if tail else "no output"


def _kill(process: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def run_subprocess(
    run: PlannedRun, timeout_s: float | None, quiet: bool, threads: int | None = None
) -> tuple[int, str]:
    """Run `python -m xmodal_bench <argv>` in its own process group, output to the console (unless
    quiet) and to `{run_dir}/sweep.log`. Returns (exit status, the log's text); -9 on timeout."""
    run.run_dir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "xmodal_bench", *run.argv]
    started = time.monotonic()
    chunks: list[bytes] = []
    with open(run.run_dir / LOG_FILE, "wb") as log:
        log.write(("$ " + " ".join(command) + "\n").encode())
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        assert process.stdout is not None
        selector = selectors.DefaultSelector()
        selector.register(process.stdout, selectors.EVENT_READ)
        timed_out = False
        try:
            while True:
                if timeout_s is not None and time.monotonic() - started > timeout_s:
                    timed_out = True
                    _kill(process, signal.SIGKILL)
                    break
                if not selector.select(timeout=1.0):
                    continue
                data = os.read(process.stdout.fileno(), 65536)
                if not data:
                    break
                chunks.append(data)
                log.write(data)
                log.flush()
                if not quiet:
                    sys.stdout.buffer.write(data)
                    sys.stdout.flush()
        except KeyboardInterrupt:
            _kill(process, signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                _kill(process, signal.SIGKILL)
            raise
        finally:
            selector.close()
            process.stdout.close()
        code = process.wait()
        text = b"".join(chunks).decode(errors="replace")
        if timed_out:
            message = f"timed out after {timeout_s:.0f} s: killed"
            log.write(f"\n{message}\n".encode())
            return -9, text + "\n" + message
    return code, text


def run_in_process(run: PlannedRun, threads: int | None = None) -> tuple[int, str]:
    """Run the CLI in this process (tests, CI on CPU): no isolation and no DDP, but no start-up cost."""
    import torch

    from xmodal_bench.cli import main

    deterministic = torch.are_deterministic_algorithms_enabled()
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return main(run.argv), ""
    except Exception:
        return 1, traceback.format_exc()
    finally:
        torch.use_deterministic_algorithms(deterministic)
        torch.set_num_threads(saved_threads)


def execute(
    run: PlannedRun, *, timeout_s: float | None, quiet: bool, in_process: bool, threads: int | None = None
) -> Outcome:
    """Run one cell of the grid and classify it; a failure is written to `{run_dir}/failure.json`."""
    started = time.perf_counter()
    if in_process:
        code, text = run_in_process(run, threads)
    else:
        code, text = run_subprocess(run, timeout_s, quiet, threads)
    seconds = time.perf_counter() - started
    record = read_results(run.run_dir / RESULTS_FILE)
    failure_path = run.run_dir / FAILURE_FILE
    # Under a multi-task launcher only rank 0 writes results.json (and may still be writing it
    # when another rank's process has exited): the other ranks go by their exit status.
    if code == 0 and (record is not None or launcher_rank() != 0):
        failure_path.unlink(missing_ok=True)
        return Outcome(run, "ok", seconds, code)
    tail = _tail(text)
    error = _error_line(tail) if code != 0 else f"exited 0 but wrote no readable {RESULTS_FILE}"
    if launcher_rank() == 0:
        atomic_write_json(
            failure_path,
            {
                "method": run.method,
                "dataset": run.dataset,
                "seed": run.seed,
                "command": ["xmodal-bench", *run.argv],
                "returncode": code,
                "error": error,
                "tail": tail,
                "log": None if in_process else str(run.run_dir / LOG_FILE),
                "seconds": round(seconds, 2),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
    return Outcome(run, "failed", seconds, code, error)


# ------------------------------------------------------------------------------------------- the sweep


def _headline(record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    from xmodal_bench.sweep.leaderboard import headline_metric

    key = headline_metric(record.get("protocol", "caption"))
    value = record.get("metrics", {}).get(key)
    return f"{key}={value:.2f}" if isinstance(value, (int, float)) else ""


def format_report(report: SweepReport) -> str:
    counts: dict[str, int] = {}
    for outcome in report.outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    head = ", ".join(f"{n} {status}" for status, n in counts.items()) or "nothing to run"
    lines = [f"sweep {report.spec.name}: {len(report.outcomes)} runs: {head}"]
    width = max([len(o.run.method) for o in report.outcomes] + [6])
    dwidth = max([len(o.run.dataset) for o in report.outcomes] + [7])
    lines.append(f"  {'method':<{width}}  {'dataset':<{dwidth}}  seed  {'status':<7}  {'time':>7}  result")
    for o in report.outcomes:
        if o.status == "failed":
            where = o.run.run_dir / (LOG_FILE if (o.run.run_dir / LOG_FILE).is_file() else FAILURE_FILE)
            result = f"{o.error} (see {where})"
        elif o.status == "planned":
            result = str(o.run.run_dir)
        else:
            result = _headline(o.record)
        lines.append(
            f"  {o.run.method:<{width}}  {o.run.dataset:<{dwidth}}  {o.run.seed:>4}  {o.status:<7}"
            f"  {o.seconds:>6.1f}s  {result}"
        )
    if report.unknown_methods:
        lines.append(f"  not registered (skipped): {', '.join(report.unknown_methods)}")
    lines += [f"  {note}" for note in report.baseline_notes]
    if report.baseline_written is not None:
        lines.append(f"baseline written: {report.baseline_written}")
    if report.baseline_problems:
        lines.append(f"REGRESSION against {report.spec.baseline.path if report.spec.baseline else ''}:")
        lines += [f"  {p}" for p in report.baseline_problems]
    return "\n".join(lines)


def _write_sweep_record(report: SweepReport, started: str) -> None:
    atomic_write_json(
        report.runs_dir / "_sweeps" / f"{report.spec.name}.json",
        {
            "sweep": report.spec.name,
            "file": str(report.spec.path),
            "started": started,
            "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runs": [o.summary() for o in report.outcomes],
            "unknown_methods": report.unknown_methods,
        },
    )


def run_sweep(
    spec: SweepSpec,
    *,
    force: bool = False,
    dry_run: bool = False,
    in_process: bool = False,
    quiet: bool = False,
    skip_unknown: bool = False,
    update_baseline: bool = False,
    check_baseline: bool = True,
    extra_overrides: list[str] | None = None,
    data_root: str | None = None,
    runs_dir: str | None = None,
    leaderboards_dir: str | None = None,
) -> SweepReport:
    """Run the grid of `spec` (see the module docstring); returns what happened to every run."""
    seeds = list(spec.seeds)
    if update_baseline:
        if spec.baseline is None:
            raise UserError(f"{spec.path}: --update-baseline needs a `baseline:` section in the sweep file")
        seeds += [s for s in spec.baseline.noise_seeds if s not in seeds]
        force = True  # results of an older checkout share the config id: never bake them in
    runs, unknown = plan_runs(
        spec,
        seeds=seeds,
        extra_overrides=extra_overrides,
        data_root=data_root,
        runs_dir=runs_dir,
        leaderboards_dir=leaderboards_dir,
        skip_unknown=skip_unknown,
    )
    report = SweepReport(spec, unknown_methods=unknown)
    if runs:
        report.runs_dir = Path(runs[0].cfg.runs_dir)
        report.leaderboards_dir = Path(runs[0].cfg.leaderboards_dir)
    rank = launcher_rank()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    for index, run in enumerate(runs, 1):
        complete = read_results(run.run_dir / RESULTS_FILE) is not None
        if dry_run:
            report.outcomes.append(Outcome(run, "skipped" if complete and not force else "planned"))
            continue
        if complete and not force:
            report.outcomes.append(Outcome(run, "skipped"))
            continue
        if not force:  # a run a killed sweep left unfinished continues from its last checkpoint
            run = replace(run, argv=[run.argv[0], "--resume", *run.argv[1:]])
        if not quiet and rank == 0:
            print(f"[{index}/{len(runs)}] {run.label}: xmodal-bench {' '.join(run.argv)}", flush=True)
        report.outcomes.append(
            execute(run, timeout_s=spec.timeout_s, quiet=quiet, in_process=in_process, threads=spec.threads)
        )
        if rank == 0:
            _write_sweep_record(report, started)
    if dry_run or rank != 0:
        return report
    _write_sweep_record(report, started)
    if runs:
        from xmodal_bench.sweep.leaderboard import write_leaderboards

        write_leaderboards(report.runs_dir, report.leaderboards_dir, spec.datasets)
    if spec.baseline is not None and (update_baseline or check_baseline):
        _baseline_step(report, update_baseline)
    return report


def _baseline_step(report: SweepReport, update: bool) -> None:
    from xmodal_bench.sweep.baseline import build_baseline, check_baseline, load_baseline, write_baseline

    spec = report.spec
    assert spec.baseline is not None
    if update:
        if report.failed:
            report.baseline_notes.append("baseline NOT written: some runs failed")
            return
        baseline = build_baseline(report.records(), spec)
        write_baseline(spec.baseline.path, baseline)
        report.baseline_written = spec.baseline.path
        return
    ci_seeds = set(spec.seeds)
    records = [r for r in report.records() if r["seed"] in ci_seeds]
    result = check_baseline(records, load_baseline(spec.baseline.path))
    report.baseline_problems = result.problems
    report.baseline_notes = result.notes


# ------------------------------------------------------------------------------------------ command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The `sweep` subcommand's options."""
    parser.add_argument(
        "--config", required=True, help="sweep file (benchmarks/sweeps/NAME.yaml) or just NAME"
    )
    parser.add_argument("--force", action="store_true", help="rerun runs whose results already exist")
    parser.add_argument("--dry-run", action="store_true", help="list the runs (and which would be skipped)")
    parser.add_argument(
        "--skip-unknown", action="store_true", help="run the registered methods, skip the others"
    )
    parser.add_argument(
        "--update-baseline",
        action="store_true",
        help="rewrite the sweep's regression baseline from this sweep (reruns every run, noise seeds too)",
    )
    parser.add_argument(
        "--no-check", action="store_true", help="do not check the sweep's regression baseline"
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run every bench in this process (single device only: no DDP; for CPU CI)",
    )
    parser.add_argument("--quiet", action="store_true", help="only the summary (runs still log to sweep.log)")
    parser.add_argument("--data-root", default=None, help="overrides the sweep file's data_root")
    parser.add_argument("--runs-dir", default=None, help="overrides the sweep file's runs_dir")
    parser.add_argument(
        "--leaderboards-dir", default=None, help="overrides the sweep file's leaderboards_dir"
    )
    parser.add_argument(
        "overrides", nargs="*", metavar="key=value", help="config overrides added to every run of the grid"
    )


def run(args: argparse.Namespace) -> int:
    spec = load_sweep(args.config)
    report = run_sweep(
        spec,
        force=args.force,
        dry_run=args.dry_run,
        in_process=args.in_process,
        quiet=args.quiet,
        skip_unknown=args.skip_unknown,
        update_baseline=args.update_baseline,
        check_baseline=not args.no_check,
        extra_overrides=args.overrides,
        data_root=args.data_root,
        runs_dir=args.runs_dir,
        leaderboards_dir=args.leaderboards_dir,
    )
    if launcher_rank() != 0:
        return 1 if report.failed else 0
    print(format_report(report))
    if not args.dry_run and report.outcomes:
        print(f"leaderboards: {report.leaderboards_dir / 'README.md'}")
    if report.failed:
        print(f"{len(report.failed)} run(s) failed", file=sys.stderr)
    if report.baseline_problems:
        print(f"{len(report.baseline_problems)} metric(s) fell below the baseline", file=sys.stderr)
    return 0 if report.ok else 1
