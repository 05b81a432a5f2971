"""Reading annotation files defensively: any malformed input becomes one clear message, never a traceback.

Two levels of failure:
- the *file* is unusable (missing, unreadable, not JSON, wrong top-level shape): `UserError`
  naming the file and what was expected; always fatal;
- one *record* is malformed (a field missing or of the wrong type): `RecordError`, which the
  format module turns into an `Entry` with `error` set; the engine counts it as bad input
  (`malformed record`), fatal unless `--skip-bad`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from xmodal_bench.errors import UserError

__all__ = [
    "RecordError",
    "annotation_path",
    "get_captions",
    "get_int_id",
    "get_str",
    "load_json",
]


class RecordError(ValueError):
    """One annotation record is malformed; the message says which field and why."""


def annotation_path(source: Path, filename: str, layout: str, obtain: str) -> Path:
    """`source / filename`, or a `UserError` saying what was expected there and where to get it."""
    if not source.exists():
        raise UserError(f"source folder {source} does not exist (expected: {layout})")
    if not source.is_dir():
        raise UserError(f"--source must be the dataset folder, got the file {source} (expected: {layout})")
    path = source / filename
    if not path.is_file():
        raise UserError(f"annotation file {path} not found (expected: {layout}; obtain: {obtain})")
    return path


def load_json(path: Path) -> tuple[Any, str]:
    """Parse a JSON file; returns (document, sha256 of its bytes). Any failure is a one-line UserError."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read annotation file {path}: {exc.strerror or exc}") from None
    try:
        document = json.loads(data)
    except json.JSONDecodeError as exc:
        raise UserError(
            f"annotation file {path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise UserError(f"annotation file {path} is not valid JSON text ({exc})") from None
    except RecursionError:
        raise UserError(f"annotation file {path} is nested too deeply to be an annotation file") from None
    return document, hashlib.sha256(data).hexdigest()


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def get_str(record: Mapping[str, Any], key: str) -> str:
    """A required non-empty string field."""
    if key not in record:
        raise RecordError(f"missing field '{key}'")
    value = record[key]
    if not isinstance(value, str):
        raise RecordError(f"field '{key}' must be a string, got {_type_name(value)}")
    if not value.strip():
        raise RecordError(f"field '{key}' is empty")
    return value


def get_captions(record: Mapping[str, Any], key: str = "captions") -> list[str]:
    """A required list of strings (may be empty: an empty list is bad input, not a malformed record)."""
    if key not in record:
        raise RecordError(f"missing field '{key}'")
    value = record[key]
    if not isinstance(value, list):
        raise RecordError(f"field '{key}' must be a list of strings, got {_type_name(value)}")
    for i, caption in enumerate(value):
        if not isinstance(caption, str):
            raise RecordError(f"field '{key}'[{i}] must be a string, got {_type_name(caption)}")
    return value


def get_int_id(record: Mapping[str, Any], key: str, required: bool = True) -> int | None:
    """An identity id: an integer, or a string of digits (some re-packaged files quote them)."""
    if key not in record or record[key] is None:
        if required:
            raise RecordError(f"missing field '{key}'")
        return None
    value = record[key]
    if isinstance(value, bool):
        raise RecordError(f"field '{key}' must be an integer, got bool")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    raise RecordError(f"field '{key}' must be an integer, got {_type_name(value)} {value!r:.40}")
