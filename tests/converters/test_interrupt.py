"""An interrupted conversion leaves no manifest (it can never be read as complete); rerunning finishes it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from datamodules.converters import convert, engine
from datamodules.converters.samples import write_sample
from datamodules.manifest import read_manifest
from xmodal_bench.errors import UserError

from .helpers import check_round_trip


def _fail_after(monkeypatch, n: int, exc: type[BaseException]) -> None:
    real, calls = engine.load_image, []

    def flaky(path):
        calls.append(path)
        if len(calls) > n:
            raise exc()
        return real(path)

    monkeypatch.setattr(engine, "load_image", flaky)


@pytest.mark.parametrize("exc", [KeyboardInterrupt, MemoryError])
def test_interrupted_half_way_leaves_no_manifest_and_rerun_finishes(tmp_path, monkeypatch, exc) -> None:
    sample = write_sample("rstp", tmp_path / "src")
    out = tmp_path / "out"
    with monkeypatch.context() as patch:
        _fail_after(patch, 12, exc)
        with pytest.raises(exc):
            convert("rstp", sample.root, out, shard_images=4, workers=2, progress=False)
    assert not (out / "rstp").exists() and not list(out.glob(".rstp.partial-*"))
    with pytest.raises(UserError, match=r"not found.*xmodal-bench data convert rstp"):
        read_manifest(out, "rstp")
    convert("rstp", sample.root, out, shard_images=4, progress=False)
    check_round_trip(sample, out)


def test_interrupted_reconversion_keeps_the_previous_dataset(tmp_path, monkeypatch) -> None:
    sample = write_sample("coco", tmp_path / "src")
    out = tmp_path / "out"
    first = convert("coco", sample.root, out, progress=False).manifest
    _fail_after(monkeypatch, 5, KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        convert("coco", sample.root, out, progress=False)
    assert read_manifest(out, "coco", verify=True) == first


def test_killed_process_leaves_no_manifest_and_rerun_cleans_up(tmp_path) -> None:
    sample = write_sample("f30k", tmp_path / "src")
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import os, signal
        from datamodules.converters import convert, engine
        real, seen = engine.load_image, []
        def dying(path):
            seen.append(path)
            if len(seen) == 15:
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path)
        engine.load_image = dying
        convert("f30k", {str(sample.root)!r}, {str(out)!r}, shard_images=4, workers=1, progress=False)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == -9, result.stderr
    assert not (out / "f30k").exists()
    (partial,) = out.glob(".f30k.partial-*")  # shards of the dead run, but never a manifest
    assert list(partial.rglob("*.tar")) and not list(partial.rglob("manifest.json"))
    convert("f30k", sample.root, out, shard_images=4, progress=False)
    check_round_trip(sample, out)
    assert not list(out.glob(".f30k.partial-*"))
