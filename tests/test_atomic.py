"""The single atomic writer: a failed write keeps the old file and leaves no temp behind."""

from __future__ import annotations

import json
import os

import pytest

from xmodal_bench.atomic import (
    atomic_open,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    remove_stale_temps,
)


def test_writes_replace_the_file_whole(tmp_path) -> None:
    target = tmp_path / "sub" / "results.json"
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    atomic_write_text(target, "second")
    assert target.read_text() == "second"
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in target.parent.iterdir()] == ["results.json"]


def test_a_failing_writer_keeps_the_old_file_and_no_temp(tmp_path) -> None:
    target = tmp_path / "board.md"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_open(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["board.md"]


def test_only_whole_file_modes(tmp_path) -> None:
    with pytest.raises(ValueError, match="whole files"), atomic_open(tmp_path / "x", "a"):
        pass


def test_remove_stale_temps_clears_what_a_killed_writer_left(tmp_path) -> None:
    (tmp_path / "last.ckpt").write_bytes(b"good")
    stale = tmp_path / ".last.ckpt.abc123.tmp"
    stale.write_bytes(b"partial")
    (tmp_path / ".other.json.x.tmp").write_text("{")
    assert remove_stale_temps(tmp_path, "last.ckpt") == [stale]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.json.x.tmp", "last.ckpt"]
    remove_stale_temps(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_files_get_the_umask_permissions_not_mkstemps_private_ones(tmp_path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    atomic_write_text(tmp_path / "board.md", "x")
    assert (tmp_path / "board.md").stat().st_mode & 0o777 == 0o666 & ~umask
