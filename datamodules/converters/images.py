"""Read one image file and make sure it decodes, without changing its bytes.

`load_image(path)` returns the file's bytes exactly as distributed, under the extension of the
format PIL *detects* (not the file name's: a PNG named `.jpg` is stored as `png`), or raises
`BadImage` with a short reason. Checks:

1. `Image.open` identifies the format from the content (junk -> "cannot identify image file");
2. JPEG: a real decode in draft mode (DCT scaling to 1/8 size, which still reads every byte of
   the scan at a fraction of the cost of a full decode). PIL's `verify()` does not read JPEG
   entropy data, so a truncated or corrupt JPEG would pass it and only fail later, inside a
   training DataLoader worker;
3. other formats: `verify()` (PNG chunk CRCs, header sanity), then a full decode.

Formats the shard format does not carry (BMP: VIPeR, which CUHK-PEDES includes as `cam_a/` and
`cam_b/`, is distributed as BMP files; also GIF, TIFF, ...) are re-encoded *losslessly* as PNG
(first frame) and counted in the conversion report: refusing them would make such a copy of
CUHK-PEDES unconvertible; JPEG (and MPO, a JPEG with extra pictures appended), PNG and WebP are
always stored byte for byte.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

__all__ = ["BadImage", "ImagePayload", "load_image", "shrink_image"]

SHRINK_JPEG_QUALITY = 95

# PIL format name -> shard extension, for formats stored as given
STORED_AS_GIVEN = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "WEBP": "webp"}
_EXT_FORMATS = {
    ".jpg": "jpg",
    ".jpeg": "jpg",
    ".png": "png",
    ".webp": "webp",
    ".bmp": "bmp",
    ".gif": "gif",
    ".tif": "tiff",
    ".tiff": "tiff",
}
_PNG_MODES = {"1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"}


class BadImage(Exception):
    """The file is missing, empty or does not decode; the message is the reason, `kind` the report kind."""

    def __init__(self, reason: str, kind: str = "undecodable_image") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class ImagePayload:
    data: bytes
    ext: str  # jpg | png | webp
    reencoded_from: str | None = None  # e.g. "BMP" when re-encoded as PNG
    extension_mismatch: bool = False  # the file name's extension disagrees with the content
    resized: bool = False  # downscaled by `shrink_image`


def load_image(path: Path, member: tuple[int, int] | None = None, suffix: str | None = None) -> ImagePayload:
    """The bytes of `path` and their shard extension; `BadImage` if missing, empty or undecodable.

    `member`: (offset, size) of the image inside `path` (an image stored in a tar shard);
    `suffix`: the extension the image is named with (default: `path`'s).
    """
    try:
        if member is None:
            data = path.read_bytes()
        else:
            with open(path, "rb") as f:
                f.seek(member[0])
                data = f.read(member[1])
            if len(data) != member[1]:
                raise BadImage(f"truncated: {len(data)} of {member[1]} bytes")
    except FileNotFoundError:
        raise BadImage("file not found", "missing_image") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL or an unencodable character in the name
        raise BadImage(f"cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    if not data:
        raise BadImage("empty file")
    reencoded = None
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format or ""
            if fmt in ("JPEG", "MPO"):  # verify() would check nothing that open() did not
                im.draft(None, (max(1, im.width // 8), 1))
                im.load()
            else:
                im.verify()
        ext = STORED_AS_GIVEN.get(fmt)
        if fmt not in ("JPEG", "MPO"):
            with Image.open(io.BytesIO(data)) as im:  # verify() leaves the image unusable: reopen
                im.load()
                if ext is None:
                    data, ext, reencoded = _as_png(im), "png", fmt or "unknown"
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, struct.error, ...
        raise BadImage(f"does not decode ({type(exc).__name__}: {_one_line(exc)})") from None
    assert ext is not None
    named = _EXT_FORMATS.get((path.suffix if suffix is None else suffix).lower())
    mismatch = named is not None and named != (reencoded or ext).lower()
    return ImagePayload(data, ext, reencoded, mismatch)


def shrink_image(payload: ImagePayload, shorter_side: int) -> ImagePayload:
    """`payload` downscaled so that its shorter side is `shorter_side` pixels, aspect kept.

    Opt-in (`convert --shorter-side N`): training decodes every image every epoch, and a 640x480
    JPEG costs about 3x the decode of the same picture at 298x224, so a set stored at training
    resolution loads faster. Never upscales (smaller images keep their bytes). JPEG sources are
    decoded at the smallest DCT scale still >= the target (cheap for large sources), resized and
    re-encoded at quality 95; PNG and WebP become PNG (lossless). Bicubic, antialiased, as the
    training transform.
    """
    with Image.open(io.BytesIO(payload.data)) as im:
        width, height = im.size
        if min(width, height) <= shorter_side:
            return payload
        scale = shorter_side / min(width, height)
        size = (max(shorter_side, round(width * scale)), max(shorter_side, round(height * scale)))
        if payload.ext == "jpg":
            im.draft("RGB", size)
        image = im.convert("RGBA" if payload.ext != "jpg" and "A" in im.getbands() else "RGB")
        small = image.resize(size, Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    if payload.ext == "jpg":
        small.save(buf, "JPEG", quality=SHRINK_JPEG_QUALITY)
        return ImagePayload(buf.getvalue(), "jpg", payload.reencoded_from, payload.extension_mismatch, True)
    small.save(buf, "PNG")
    return ImagePayload(buf.getvalue(), "png", payload.reencoded_from, payload.extension_mismatch, True)


def _as_png(im: Image.Image) -> bytes:
    im.seek(0)
    frame = im if im.mode in _PNG_MODES else im.convert("RGBA" if "A" in im.getbands() else "RGB")
    buf = io.BytesIO()
    frame.save(buf, "PNG")
    return buf.getvalue()


def _one_line(exc: BaseException) -> str:
    text = " ".join(re.sub(r" ?<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).split())
    return text[:120] if text else "no detail"
