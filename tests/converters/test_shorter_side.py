"""`convert --shorter-side N`: images stored at training resolution (downscaled, never upscaled)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from datamodules.converters import convert
from datamodules.converters.images import ImagePayload, shrink_image
from datamodules.converters.samples import write_sample
from xmodal_bench.cli import main

from .helpers import read_back


def _encoded(size: tuple[int, int], fmt: str, mode: str = "RGB") -> bytes:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], len(mode)), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels.squeeze(), mode).save(buf, fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("size", "ext", "fmt", "expected"),
    [
        ((64, 48), "jpg", "JPEG", (32, 24)),  # landscape: the height becomes 24
        ((30, 90), "png", "PNG", (24, 72)),  # portrait: the width becomes 24
        ((48, 48), "jpg", "JPEG", (24, 24)),
    ],
)
def test_larger_images_are_downscaled_to_the_shorter_side(size, ext, fmt, expected) -> None:
    shrunk = shrink_image(ImagePayload(_encoded(size, fmt), ext), 24)
    with Image.open(io.BytesIO(shrunk.data)) as im:
        assert im.size == expected and im.format == fmt
    assert shrunk.resized and shrunk.ext == ext


def test_alpha_survives_and_small_images_keep_their_bytes() -> None:
    rgba = shrink_image(ImagePayload(_encoded((60, 40), "PNG", "RGBA"), "png"), 20)
    with Image.open(io.BytesIO(rgba.data)) as im:
        assert im.mode == "RGBA" and im.size == (30, 20)
    small = ImagePayload(_encoded((40, 20), "JPEG"), "jpg")
    assert shrink_image(small, 20) is small and shrink_image(small, 64) is small


def test_convert_stores_downscaled_images_and_says_so(tmp_path) -> None:
    sample = write_sample("coco", tmp_path / "src", image_size=(48, 64))
    report = convert("coco", sample.root, tmp_path / "out", shorter_side=24, progress=False)
    manifest, splits = read_back(tmp_path / "out", "coco")
    sizes = {Image.open(io.BytesIO(s["image"])).size for split in splits.values() for s in split}
    assert sizes == {(32, 24)}
    note = "downscaled to a shorter side of 24 px (--shorter-side)"
    assert report.notes[note] == report.images == sum(len(s) for s in splits.values())
    assert manifest["source"]["notes"][note] == report.images
    assert manifest["command"].endswith("--shorter-side 24")


def test_the_command_line_flag_and_its_bad_values(tmp_path, capsys) -> None:
    sample = write_sample("f30k", tmp_path / "src", image_size=(40, 40))
    argv = ["data", "convert", "f30k", "--source", str(sample.root), "--out", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as exited:  # argparse's own one-line error
        main([*argv, "--shorter-side", "0"])
    assert exited.value.code == 2
    assert "--shorter-side" in capsys.readouterr().err and not (tmp_path / "out" / "f30k").exists()
    assert main([*argv, "--shorter-side", "16"]) == 0
    _, splits = read_back(tmp_path / "out", "f30k")
    assert {Image.open(io.BytesIO(s["image"])).size for split in splits.values() for s in split} == {(16, 16)}
