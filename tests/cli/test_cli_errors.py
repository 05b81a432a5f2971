"""Every user mistake ends with one line on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from xmodal_bench.cli import main


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse exits by itself
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, pattern: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["bench", "--method", "nosuch"], "unknown method 'nosuch'; known methods: .*clip"),
        (["bench", "--data", "nosuch"], "unknown dataset 'nosuch'; known datasets: .*synth"),
        (["bench", "optim.lr=fast"], "optim.lr"),
        (["bench", "optim.nosuch=1"], "optim.nosuch"),
        (["bench", "data.batch_size=0"], "batch_size"),
        (["bench", "lr"], "expected key=value"),
        (["bench", "--max-epochs", "0"], "positive integer"),
        (["bench", "--devices", "two"], "number of devices"),
        (["bench", "--scale", "huge"], "invalid choice"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_mistakes_are_one_line_exit_2(capsys, argv, pattern) -> None:
    _assert_one_line_error(*_run(capsys, *argv)[::2], pattern)


def test_missing_dataset_names_where_it_looked_and_the_convert_command(capsys, tmp_path) -> None:
    code, _, err = _run(capsys, "bench", "--data", "cuhk", "--data-root", str(tmp_path / "nowhere"))
    _assert_one_line_error(code, err, r"no dataset 'cuhk' at .*nowhere.*xmodal-bench data convert cuhk")


def test_stale_manifest_is_refused_with_the_fix(capsys, synth_root, tmp_path) -> None:
    root = tmp_path / "data"
    shutil.copytree(synth_root / "synth_reid", root / "cuhk")
    manifest = json.loads((root / "cuhk" / "manifest.json").read_text())
    manifest["format_version"] = 999
    (root / "cuhk" / "manifest.json").write_text(json.dumps(manifest))
    code, _, err = _run(
        capsys, "bench", "--data", "cuhk", "--data-root", str(root), "--runs-dir", str(tmp_path / "r")
    )
    _assert_one_line_error(code, err, "format version 999.*re-create the dataset")


def test_python_dash_m_has_no_traceback(tmp_path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "xmodal_bench", "bench", "--method", "nosuch"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert (
        result.stderr.startswith("xmodal-bench: error: unknown method") and "Traceback" not in result.stderr
    )


def test_list_shows_methods_and_datasets(capsys) -> None:
    code, out, _ = _run(capsys, "list")
    assert code == 0
    assert re.search(r"clip\s+Dual encoder", out) and re.search(r"synth_reid\s+person", out)
