"""A converted set is usable by name: `list`, `zeroshot`, `bench` and sweeps, with no YAML of its own;
a CLIP_benchmark export with a test split only is evaluated zero-shot, and training on it says why not."""

from __future__ import annotations

import json
import re

import pytest

from datamodules.converters import convert
from datamodules.converters.samples import write_sample
from xmodal_bench.cli import main

pytestmark = pytest.mark.slow

RUN = ["data.workers=0", "data.eval_batch_size=8", "eval.latency_queries=4", "trainer.accelerator=cpu"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    base = tmp_path_factory.mktemp("named")
    sample = write_sample("wds", base / "src", sizes={"test": 6})  # as CLIP_benchmark exports: test only
    convert("wds", sample.root, base / "data", dataset="cb_test", progress=False)
    return base


def test_list_shows_the_converted_set(root, capsys) -> None:
    assert main(["list", "--data-root", str(root / "data")]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.strip().startswith("cb_test"))
    assert "caption" in line and "test 6 images" in line and "data convert wds" in line


def test_zeroshot_and_a_sweep_by_name(root, capsys) -> None:
    data = ["--data", "cb_test", "--data-root", str(root / "data"), "--runs-dir", str(root / "runs")]
    assert main(["zeroshot", *data, "--leaderboards-dir", str(root / "boards"), *RUN]) == 0
    (path,) = (root / "runs" / "cb_test" / "zeroshot").glob("*/results.json")
    record = json.loads(path.read_text())
    assert (
        record["dataset"] == "cb_test" and record["protocol"] == "caption" and "t2i_r1" in record["metrics"]
    )
    sweep = root / "sweep.yaml"
    sweep.write_text(
        "about: a converted set by name\nmethods: [zeroshot]\ndatasets: [cb_test]\nseeds: [0]\n"
        f"data_root: {root / 'data'}\nruns_dir: {root / 'sweep_runs'}\nleaderboards_dir: {root / 'sweep_boards'}\n"
        f"overrides: [{', '.join(RUN)}]\n"
    )
    assert main(["sweep", "--config", str(sweep), "--in-process"]) == 0
    assert list((root / "sweep_runs" / "cb_test" / "zeroshot").glob("*/results.json"))
    assert (root / "sweep_boards" / "cb_test.md").is_file()
    capsys.readouterr()


def test_training_on_a_test_only_set_is_one_line(root, capsys) -> None:
    code = main(
        ["bench", "--data", "cb_test", "--data-root", str(root / "data"), "--runs-dir", str(root / "r")]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert re.search(r"'cb_test' has no train split.*xmodal-bench zeroshot --data cb_test", err[0])
