"""`xmodal-bench sweep`: run a grid of (method, dataset, seed) benchmark runs, then the leaderboards.

Each run is its `RunRequest` as `python -m xmodal_bench bench ... --no-leaderboard` in a fresh
subprocess, so Lightning's DDP launcher (which re-executes the command line for every extra rank)
works, memory is returned between runs, and a crash is recorded instead of ending the sweep
(`--in-process` calls `run.bench` directly instead). Runs use the config's
`trainer.devices=auto` / `accelerator=auto` unless the sweep overrides them: every GPU of the
node (DDP) when there are several, else one device; `trainer.num_nodes` and the SLURM /
torchrun environment are Lightning's business (see the README's job script).

- A run whose `results.json` is already there (same config id, same seed) is skipped unless
  `--force`, and the others run with `bench --resume`: an interrupted sweep resumes where it
  stopped, a run it killed half-way from that run's last checkpoint (`--force` starts afresh).
- A failing run (non-zero exit, a timeout, no results written) is recorded in
  `{runs_dir}/_sweeps/logs/{dataset}/{method}/{run_id}.failure.json` with the end of its log; its
  full output is beside it (`{run_id}.log`). Nothing is written into a run folder but the run's own
  results. The sweep goes on; it ends with a summary table and exit status 1 if any run failed.
- The sweep's own record (every run's status and time) is `{runs_dir}/_sweeps/{name}.json`.
- At the end, every leaderboard is rebuilt once from all results (`report.leaderboard`), and when the
  sweep file names a `baseline` the regression check runs (`sweep.baseline`), or with
  `--update-baseline` the baseline is rewritten from this sweep.

Under a multi-task launcher (SLURM `srun`, `torchrun`) every task runs the same sweep in lock
step (each bench run is one collective job); only global rank 0 writes the sweep's own files.
"""

from __future__ import annotations

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
from xmodal_bench.metrics import get_protocol
from xmodal_bench.report.leaderboard import write_leaderboards
from xmodal_bench.report.results import RESULTS_FILE, read_results
from xmodal_bench.run.folders import leaderboards_dir_for
from xmodal_bench.sweep.baseline import build_baseline, check_baseline, load_baseline, write_baseline
from xmodal_bench.sweep.spec import PlannedRun, SweepSpec, plan_runs

SWEEPS = "_sweeps"
TAIL_LINES = 30


def log_path(run: PlannedRun) -> Path:
    """Where the sweep keeps a run's console output (never inside the run folder)."""
    return Path(run.cfg.runs_dir) / SWEEPS / "logs" / run.dataset / run.method / f"{run.run_id}.log"


def failure_path(run: PlannedRun) -> Path:
    return log_path(run).with_suffix(".failure.json")


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
    quiet) and to its log (`log_path`). Returns (exit status, the log's text); -9 on timeout."""
    log_file = log_path(run)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("WANDB_MODE", "offline")
    if threads is not None:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    env["PYTHONUNBUFFERED"] = "1"
    command = [sys.executable, "-m", "xmodal_bench", *run_argv(run)]
    started = time.monotonic()
    chunks: list[bytes] = []
    with open(log_file, "wb") as log:
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


def run_argv(run: PlannedRun) -> list[str]:
    """The `xmodal-bench` arguments of a sweep cell: its request, resumable, no leaderboard of its own."""
    argv = run.request.argv()
    flags = len(argv) - len(run.request.overrides)
    return [argv[0], *(["--resume"] if run.resume else []), *argv[1:flags], "--no-leaderboard", *argv[flags:]]


def run_in_process(run: PlannedRun, threads: int | None = None) -> tuple[int, str]:
    """Run the bench in this process (tests, CI on CPU): no isolation and no DDP, but no start-up cost."""
    import torch

    from xmodal_bench.run.bench import bench

    deterministic = torch.are_deterministic_algorithms_enabled()
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        bench(run.cfg, resume=run.resume)
        return 0, ""
    except UserError as exc:
        return UserError.exit_code, f"xmodal-bench: error: {exc}"
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
    failure = failure_path(run)
    # Under a multi-task launcher only rank 0 writes results.json (and may still be writing it
    # when another rank's process has exited): the other ranks go by their exit status.
    if code == 0 and (record is not None or launcher_rank() != 0):
        failure.unlink(missing_ok=True)
        return Outcome(run, "ok", seconds, code)
    tail = _tail(text)
    error = _error_line(tail) if code != 0 else f"exited 0 but wrote no readable {RESULTS_FILE}"
    if launcher_rank() == 0:
        atomic_write_json(
            failure,
            {
                "method": run.method,
                "dataset": run.dataset,
                "seed": run.seed,
                "command": ["xmodal-bench", *run_argv(run)],
                "returncode": code,
                "error": error,
                "tail": tail,
                "log": None if in_process else str(log_path(run)),
                "seconds": round(seconds, 2),
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            },
        )
    return Outcome(run, "failed", seconds, code, error)


# ------------------------------------------------------------------------------------------- the sweep


def _headline(record: dict[str, Any] | None) -> str:
    if not record:
        return ""
    try:
        key = get_protocol(record.get("protocol", "caption")).headline
    except UserError:
        return ""
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
            where = log_path(o.run) if log_path(o.run).is_file() else failure_path(o.run)
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
        report.runs_dir / SWEEPS / f"{report.spec.name}.json",
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
        report.leaderboards_dir = leaderboards_dir_for(runs[0].cfg)
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
            run = replace(run, resume=True)
        if not quiet and rank == 0:
            print(f"[{index}/{len(runs)}] {run.label}: xmodal-bench {' '.join(run_argv(run))}", flush=True)
        report.outcomes.append(
            execute(run, timeout_s=spec.timeout_s, quiet=quiet, in_process=in_process, threads=spec.threads)
        )
        if rank == 0:
            _write_sweep_record(report, started)
    if dry_run or rank != 0:
        return report
    _write_sweep_record(report, started)
    if runs:
        write_leaderboards(report.runs_dir, report.leaderboards_dir, spec.datasets)
    if spec.baseline is not None and (update_baseline or check_baseline):
        _baseline_step(report, update_baseline)
    return report


def _baseline_step(report: SweepReport, update: bool) -> None:
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
