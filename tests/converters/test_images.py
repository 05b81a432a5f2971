"""Image checks: bytes stored as given, format from the content, lossless re-encoding, decode failures."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from datamodules.converters.images import BadImage, load_image


def _encode(fmt: str, mode: str = "RGB", size=(24, 16), **kw) -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 120 if mode in ("L", "P") else (10, 200, 30, 0)[: len(mode)]).save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("name", "fmt", "mode", "ext"),
    [("a.jpg", "JPEG", "RGB", "jpg"), ("a.jpeg", "JPEG", "CMYK", "jpg"), ("a.png", "PNG", "RGBA", "png"),
     ("a.webp", "WEBP", "RGB", "webp"), ("a.png", "PNG", "P", "png")],
)  # fmt: skip
def test_supported_formats_are_stored_byte_for_byte(tmp_path, name, fmt, mode, ext) -> None:
    data = _encode(fmt, mode)
    (tmp_path / name).write_bytes(data)
    payload = load_image(tmp_path / name)
    assert payload.data == data and payload.ext == ext
    assert payload.reencoded_from is None and not payload.extension_mismatch


def test_format_comes_from_the_content_not_the_name(tmp_path) -> None:
    data = _encode("PNG")
    (tmp_path / "really_a_png.jpg").write_bytes(data)
    payload = load_image(tmp_path / "really_a_png.jpg")
    assert payload.ext == "png" and payload.data == data and payload.extension_mismatch


@pytest.mark.parametrize(("fmt", "mode"), [("BMP", "RGB"), ("GIF", "P"), ("TIFF", "RGB"), ("TIFF", "CMYK")])
def test_other_formats_are_reencoded_losslessly_as_png(tmp_path, fmt, mode) -> None:
    data = _encode(fmt, mode)
    (tmp_path / f"a.{fmt.lower()}").write_bytes(data)
    payload = load_image(tmp_path / f"a.{fmt.lower()}")
    assert payload.ext == "png" and payload.reencoded_from == fmt
    with Image.open(io.BytesIO(data)) as original, Image.open(io.BytesIO(payload.data)) as stored:
        assert stored.format == "PNG" and original.convert("RGB").tobytes() == stored.convert("RGB").tobytes()


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty file"), (b"GIF89a nonsense", "does not decode"), (None, "does not decode")],
)
def test_undecodable(tmp_path, content, reason) -> None:
    if content is None:  # a JPEG cut short: PIL's verify() accepts it, decoding does not
        jpeg = _encode("JPEG", size=(64, 64), quality=95)
        content = jpeg[: len(jpeg) - 40]
    (tmp_path / "x.jpg").write_bytes(content)
    with pytest.raises(BadImage, match=reason) as info:
        load_image(tmp_path / "x.jpg")
    assert info.value.kind == "undecodable_image"
    with pytest.raises(BadImage, match="file not found") as info:
        load_image(tmp_path / "gone.jpg")
    assert info.value.kind == "missing_image"
