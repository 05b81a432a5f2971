"""wandb logging: run layout (group, job_type, tags, config, summary), and never failing a run.

`wandb.init` is faked here (no wandb service started); the real offline run directory written by
a `bench` run is checked in test_eval_ddp.py, which trains anyway.
"""

from __future__ import annotations

import sys
import types

import pytest
import wandb

from xmodal_bench.run.request import RunRequest
from xmodal_bench.run.wandb_logging import SafeWandbLogger, build_wandb_logger, finish_wandb, flatten


@pytest.fixture
def cfg():
    return RunRequest("irra", "synth_reid", seed=3).compose()


class FakeRun:
    def __init__(self, **kwargs) -> None:
        self.init = kwargs
        self.id, self.dir, self.url = "abc123", "/tmp/fake/files", None
        self.summary: dict = {}
        self.logged: list = []
        self.finished = False

    def log(self, data, step=None) -> None:
        self.logged.append(data)

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def fake_init(monkeypatch):
    runs: list[FakeRun] = []

    def init(**kwargs):
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    monkeypatch.setattr(wandb, "init", init)
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setenv("WANDB_MODE", "offline")
    return runs


def test_one_wandb_run_per_benchmark_run_laid_out_for_comparison(cfg, tmp_path, fake_init) -> None:
    logger = build_wandb_logger(cfg, tmp_path, "tiny-1234abcd-seed3", "1234abcd")
    assert isinstance(logger, SafeWandbLogger)
    (run,) = fake_init
    init = run.init
    assert init["group"] == "synth_reid" and init["job_type"] == "irra"
    assert init["name"] == "irra/synth_reid/tiny-1234abcd-seed3" and init["dir"] == str(tmp_path)
    assert {"irra", "synth_reid", "person", "tiny", "seed3", "config:1234abcd"} <= set(init["tags"])
    assert init["config"]["irra"]["temperature"] == cfg.irra.temperature
    logger.log_metrics({"train/sdm": 1.5}, step=3)
    record = {
        "metrics": {"r1": 50.0},
        "modes": {"global": {"metrics": {"r1": 50.0}}},
        "efficiency": {"latency_ms": {"t2i_ms": 0.2}},
        "config": {"not": "in the summary"},
    }
    info = finish_wandb(logger, record)
    assert run.finished and info == {"id": "abc123", "mode": "offline", "dir": "/tmp/fake", "url": None}
    # final metrics under the same names as results.json, flattened
    assert run.summary == {
        "metrics/r1": 50.0,
        "modes/global/metrics/r1": 50.0,
        "efficiency/latency_ms/t2i_ms": 0.2,
    }


def test_disabled_wandb_is_not_started(cfg, tmp_path, monkeypatch, fake_init) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert build_wandb_logger(cfg, tmp_path, "r", "c") is None and not fake_init


def test_missing_wandb_package_is_a_warning(cfg, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.warns(RuntimeWarning, match="wandb init failed.*continuing without wandb"):
        assert build_wandb_logger(cfg, tmp_path, "r", "c") is None
    assert finish_wandb(None, {"metrics": {}}) is None


def test_failing_init_is_a_warning(cfg, tmp_path, monkeypatch) -> None:
    def broken(**kwargs):
        raise wandb.errors.CommError("network is down")

    monkeypatch.setattr(wandb, "init", broken)
    monkeypatch.setattr(wandb, "run", None)
    monkeypatch.setenv("WANDB_MODE", "online")
    with pytest.warns(RuntimeWarning, match="network is down"):
        assert build_wandb_logger(cfg, tmp_path, "r", "c") is None


def test_failing_logging_mid_run_stops_wandb_not_the_run(cfg, tmp_path, fake_init) -> None:
    logger = build_wandb_logger(cfg, tmp_path, "r", "c")
    run = fake_init[0]

    def broken_log(data, step=None):
        raise OSError("disk full")

    run.log = broken_log
    with pytest.warns(RuntimeWarning, match="wandb log_metrics failed.*disk full"):
        logger.log_metrics({"train/loss": 1.0}, step=1)
    assert logger.broken
    logger.log_metrics({"train/loss": 0.5}, step=2)  # silently ignored from now on
    logger.log_hyperparams({"a": 1})
    assert finish_wandb(logger, {"metrics": {"r1": 1.0}}) is None


def test_failing_finish_is_a_warning(cfg, tmp_path, fake_init) -> None:
    logger = build_wandb_logger(cfg, tmp_path, "r", "c")
    fake_init[0].finish = types.MethodType(
        lambda self: (_ for _ in ()).throw(RuntimeError("boom")), fake_init[0]
    )
    with pytest.warns(RuntimeWarning, match="wandb finish failed"):
        assert finish_wandb(logger, {"metrics": {"r1": 1.0}}) is None


def test_flatten_keeps_scalars_only() -> None:
    tree = {"a": {"b": 1, "c": [1, 2], "d": None, "e": {"f": "x"}}, "g": True}
    assert flatten(tree) == {"a/b": 1, "a/e/f": "x", "g": True}
