"""Where a run lives, how a rerun replaces it, and who may write it.

A complete run is `{runs_dir}/{dataset}/{method}/{run_id}/` (`config.yaml`, `results.json`,
`checkpoints/`, `logs/`). Its id comes from the config (scale, a hash of what the run measures,
seed), so the same config always lands in the same folder and a rerun replaces its leaderboard
row instead of adding one.

A run never trains in that folder. It trains in its *staging* folder,
`{runs_dir}/_staging/{dataset}/{method}/{run_id}/`, and only once its `results.json` is written
does `publish` swap the staging folder in for the previous complete run. A failure at any point
(a bad value, corrupt data, a kill) leaves the previous run and its leaderboard row untouched,
and the staging folder holds the checkpoint `--resume` continues from. Staging folders sit one
level deeper than runs, so leaderboards and `run:METHOD` never mistake them for finished runs.

`RunLock` makes one process the writer of a run id at a time: a second `bench` of the same
config ends at once with one line naming the folder. Nothing is written or deleted outside
`runs_dir`: a `run_id` is a single path component.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from omegaconf import DictConfig, OmegaConf

from xmodal_bench.config import NON_IDENTITY_KEYS, to_dict
from xmodal_bench.errors import UserError

STAGING = "_staging"
LOCKS = "_locks"
LEADERBOARDS = "_leaderboards"  # where a user's own runs write their leaderboards (not leaderboards/)
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}")
# Keys added to the schema after runs were recorded: left out of the hash while at their default,
# so that adding them did not change the config id of earlier runs (nor of the CI baseline).
_HASH_NEUTRAL_DEFAULTS = {"data.on_error": "error"}


def config_id(cfg: DictConfig) -> str:
    """A short hash of everything that decides what a run measures (seed and paths left out).

    Runs with the same config id differ only by seed: the leaderboard averages them.
    """
    identity = to_dict(cfg)
    neutral = [
        key for key, default in _HASH_NEUTRAL_DEFAULTS.items() if OmegaConf.select(cfg, key) == default
    ]
    for key in (*NON_IDENTITY_KEYS, *neutral):
        *parents, leaf = key.split(".")
        node = identity
        for parent in parents:
            node = node[parent]
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]


def check_run_id(run_id: str) -> str:
    """`run_id` if it is one safe path component (letters, digits, `._=+-`), else a UserError."""
    if not _RUN_ID.fullmatch(run_id) or run_id in (".", ".."):
        raise UserError(
            f"run_id={run_id!r}: a run id is one folder name (letters, digits and . _ = + -, "
            "starting with a letter or digit), never a path"
        )
    return run_id


def run_id_for(cfg: DictConfig) -> str:
    return check_run_id(str(cfg.run_id)) if cfg.run_id else f"{cfg.scale}-{config_id(cfg)}-seed{cfg.seed}"


def run_dir_for(cfg: DictConfig) -> Path:
    """The folder of the complete run."""
    return Path(cfg.runs_dir) / cfg.data.name / cfg.method / run_id_for(cfg)


def staging_dir_for(cfg: DictConfig) -> Path:
    """The folder the run trains in until it is complete (see the module docstring)."""
    return Path(cfg.runs_dir) / STAGING / cfg.data.name / cfg.method / run_id_for(cfg)


def leaderboards_dir_for(cfg: DictConfig) -> Path:
    """Where a run's leaderboards go: `leaderboards_dir` when set, else beside the runs."""
    return Path(cfg.leaderboards_dir) if cfg.leaderboards_dir else Path(cfg.runs_dir) / LEADERBOARDS


def publish(staging: Path, run_dir: Path) -> None:
    """Replace the complete run at `run_dir` (if any) by the finished `staging` folder.

    The previous run is renamed aside, the staging folder renamed in, then the old one deleted;
    a kill between the two renames is repaired by `recover` on the next start.
    """
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    retired = _retired(run_dir)
    if retired.exists():
        shutil.rmtree(retired)
    if run_dir.exists():
        os.replace(run_dir, retired)
    os.replace(staging, run_dir)
    shutil.rmtree(retired, ignore_errors=True)


def recover(run_dir: Path) -> None:
    """Undo a `publish` killed between its renames: put the previous complete run back."""
    retired = _retired(run_dir)
    if retired.exists():
        if run_dir.exists():
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(retired, run_dir)


def _retired(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.replaced"


class RunLock:
    """An exclusive, non-blocking lock on one run id (a file under `{runs_dir}/_locks/`).

    The operating system releases it when the process ends, however it ends, so a killed run
    never leaves a stale lock behind.
    """

    def __init__(self, cfg: DictConfig) -> None:
        self.path = Path(cfg.runs_dir) / LOCKS / cfg.data.name / cfg.method / f"{run_id_for(cfg)}.lock"
        self.run_dir = run_dir_for(cfg)
        self._handle: IO[str] | None = None

    def acquire(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            handle.close()
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise UserError(
                    f"{self.run_dir} is being written by another run of the same config "
                    f"(lock {self.path}); wait for it to finish, or pass another run_id=NAME"
                ) from None
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()
