"""`backbone.pretrained=run:METHOD`: which run a run starts from, its weights, sweeps that chain runs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from xmodal_bench.cli import main
from xmodal_bench.config import compose, to_yaml
from xmodal_bench.errors import UserError
from xmodal_bench.registry import create_method, method_sections
from xmodal_bench.run.warm_start import find_source_checkpoint, resolve_warm_start
from xmodal_bench.sweep.spec import load_sweep, plan_runs

SIZES = ["data.synthetic.train_ids=12", "data.synthetic.val_ids=4", "data.synthetic.test_ids=6"]


def _cfg(method: str, runs: Path, *overrides: str):
    parts, sections = method_sections(method)
    base = [f"runs_dir={runs}", "data.root=data/test-warm-start", *SIZES]
    extra = ["data.train_identities=12"] if method == "irra" else []
    return compose(parts, sections, "synth_reid", "tiny", overrides=[*base, *extra, *overrides])


def _finished_run(runs: Path, name: str, cfg, checkpoint: str = "best.ckpt", weights=None) -> Path:
    """A run folder as `bench` leaves it: config.yaml, results.json and a checkpoint."""
    run_dir = runs / cfg.data.name / cfg.method / name
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    torch.save({"state_dict": weights or {}}, run_dir / "checkpoints" / checkpoint)
    (run_dir / "results.json").write_text("{}")
    return run_dir / "checkpoints" / checkpoint


def test_the_matching_finished_run_is_the_source(tmp_path) -> None:
    runs = tmp_path / "runs"
    wanted = _finished_run(runs, "a", _cfg("clip", runs))
    _finished_run(runs, "other-seed", _cfg("clip", runs, "seed=1"))
    _finished_run(runs, "other-data", _cfg("clip", runs, "data.synthetic.train_ids=20"))
    _finished_run(runs, "chained", _cfg("clip", runs, "backbone.pretrained=run:clip"))
    unfinished = _finished_run(runs, "unfinished", _cfg("clip", runs))
    (unfinished.parent.parent / "results.json").unlink()
    os.utime(unfinished.parent.parent / "config.yaml")
    cfg = _cfg("irra", runs, "backbone.pretrained=run:clip")
    assert find_source_checkpoint(cfg, "clip") == wanted
    resolved, checkpoint = resolve_warm_start(cfg)
    assert checkpoint == wanted and resolved.backbone.pretrained == str(wanted)
    assert cfg.backbone.pretrained == "run:clip"  # the run's own config keeps the reference


def test_the_newest_of_several_sources_wins_and_last_ckpt_serves_without_best(tmp_path) -> None:
    runs = tmp_path / "runs"
    older = _finished_run(runs, "older", _cfg("clip", runs))
    newer = _finished_run(runs, "newer", _cfg("clip", runs, "trainer.max_epochs=3"), checkpoint="last.ckpt")
    os.utime(older.parent.parent / "results.json", (1, 1))
    assert find_source_checkpoint(_cfg("irra", runs, "backbone.pretrained=run:clip"), "clip") == newer


@pytest.mark.parametrize(
    ("pretrained", "message"),
    [
        ("run:clip", "no finished clip run on synth_reid (seed 0, scale tiny"),
        ("run:nosuch", "nosuch"),
    ],
)
def test_a_missing_source_is_one_clear_error(tmp_path, pretrained, message) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        resolve_warm_start(_cfg("irra", tmp_path / "runs", f"backbone.pretrained={pretrained}"))


def test_other_values_pass_through(tmp_path) -> None:
    cfg = _cfg("irra", tmp_path / "runs")
    assert resolve_warm_start(cfg) == (cfg, None)


def test_the_method_starts_with_the_source_backbone_weights(tmp_path) -> None:
    runs = tmp_path / "runs"
    torch.manual_seed(1)
    clip = create_method(_cfg("clip", runs, "backbone.pretrained=none"))  # unlike the default start
    _finished_run(runs, "a", _cfg("clip", runs), weights=clip.state_dict())
    model_cfg, _ = resolve_warm_start(_cfg("irra", runs, "backbone.pretrained=run:clip"))
    torch.manual_seed(2)
    irra = create_method(model_cfg)
    source = clip.backbone.model.state_dict()
    started = irra.backbone.model.state_dict()
    assert source.keys() == started.keys()
    assert all(torch.equal(source[k], started[k]) for k in source)
    fresh = create_method(_cfg("irra", runs)).backbone.model.state_dict()
    assert not torch.equal(fresh["visual.conv1.weight"], source["visual.conv1.weight"])


# ------------------------------------------------------------------------------------------- sweeps


def _sweep(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(body)
    return path


def test_a_sweep_file_extends_another_and_drops_overrides_of_names_it_left_out(tmp_path) -> None:
    _sweep(
        tmp_path,
        "parent",
        "methods: [clip, irra]\ndatasets: [synth, synth_reid]\nseeds: [0, 1]\n"
        "name: parent\noverrides: [trainer.max_epochs=2]\ndataset_overrides: {synth: [data.batch_size=8]}\n"
        f"runs_dir: {tmp_path / 'runs'}\n",
    )
    child = load_sweep(
        _sweep(tmp_path, "child", "extends: parent.yaml\ndatasets: [synth_reid]\n")  # next to child.yaml
    )
    assert child.methods == ["clip", "irra"] and child.datasets == ["synth_reid"] and child.seeds == [0, 1]
    assert child.overrides == ["trainer.max_epochs=2"] and child.dataset_overrides == {}
    assert child.name == "child" and child.runs_dir == str(tmp_path / "runs")


def test_an_extends_cycle_is_an_error(tmp_path) -> None:
    _sweep(tmp_path, "a", f"extends: {tmp_path / 'b.yaml'}\nmethods: [clip]\ndatasets: [synth]\n")
    _sweep(tmp_path, "b", f"extends: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(UserError, match="cycle"):
        load_sweep(tmp_path / "a.yaml")


def test_a_sweep_must_train_a_source_before_the_runs_that_start_from_it(tmp_path) -> None:
    body = "datasets: [synth_reid]\nmethod_overrides: {irra: [backbone.pretrained=run:clip]}\n"
    spec = load_sweep(_sweep(tmp_path, "bad", "methods: [irra, clip]\n" + body))
    with pytest.raises(UserError, match="clip must come before irra"):
        plan_runs(spec)
    runs, _ = plan_runs(load_sweep(_sweep(tmp_path, "good", "methods: [clip, irra]\n" + body)))
    assert [run.method for run in runs] == ["clip", "irra"]


# ----------------------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_bench_starts_from_a_finished_run_and_its_checkpoint_evaluates_without_it(
    synth_root, tmp_path, synth_params
) -> None:
    params = [f"data.synthetic.{k}={v}" for k, v in synth_params["synth_reid"].items()]

    def bench(method: str, *extra: str) -> int:
        return main(
            [
                "bench", "--method", method, "--data", "synth_reid", "--data-root", str(synth_root),
                "--max-epochs", "1", "--runs-dir", str(tmp_path / "runs"),
                "--leaderboards-dir", str(tmp_path / "boards"),
                "data.batch_size=16", "data.eval_batch_size=16", "data.workers=0", *params, *extra,
            ]
        )  # fmt: skip

    assert bench("irra", "backbone.pretrained=run:clip") == 2  # no source yet: one line, exit 2
    assert bench("clip") == 0
    assert bench("irra", "backbone.pretrained=run:clip", "irra.losses=[sdm]") == 0
    (clip_dir,) = (tmp_path / "runs" / "synth_reid" / "clip").iterdir()
    (irra_dir,) = (tmp_path / "runs" / "synth_reid" / "irra").iterdir()
    record = json.loads((irra_dir / "results.json").read_text())
    assert record["training"]["started_from"].startswith(str(clip_dir / "checkpoints"))
    assert record["config"]["backbone"]["pretrained"] == "run:clip"
    assert "backbone.pretrained=run:clip" in (tmp_path / "boards" / "synth_reid.md").read_text()
    # the fine-tuned checkpoint holds every weight: evaluating it does not need the source any more
    for path in clip_dir.rglob("*.ckpt"):
        path.unlink()
    out = tmp_path / "eval"
    checkpoint = irra_dir / "checkpoints" / f"{record['training']['tested_checkpoint']}.ckpt"
    assert main(["eval", "--checkpoint", str(checkpoint), "--out", str(out), "data.workers=0"]) == 0
    evaluated = json.loads((out / "results.json").read_text())
    assert evaluated["metrics"] == pytest.approx(record["metrics"])
