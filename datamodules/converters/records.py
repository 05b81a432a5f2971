"""What a converter reads out of an annotation file, and the book-keeping of what it had to drop.

A format module turns its annotation file into a stream of `Entry`s (one per image, in file
order). Everything after that is shared (`datamodules.converters.engine`): split mapping, caption
clean-up, duplicate and missing-file checks, image validation, identity remapping, writing.

Two kinds of loss are tracked separately, because they mean different things to a user:

- `dropped` (a `collections.Counter`): what the *protocol* removes on purpose and is always
  reported, never an error: captions beyond the first five of a Karpathy image, captions that
  are empty once whitespace is normalised;
- `Problems`: *bad input*, i.e. the dataset on disk does not match its annotation file or the file
  is malformed: missing image, undecodable image, empty caption list, unknown split, duplicate
  image, malformed record. Fatal (exit 2, nothing written) unless `--skip-bad`, and always
  reported with counts and the first few paths.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from xmodal_bench.errors import UserError

__all__ = [
    "BAD_INPUT_KINDS",
    "BadInputError",
    "Entry",
    "Problems",
    "clean_caption",
    "resolve_inside",
]

# kind -> how it reads in a report ("3 missing image")
BAD_INPUT_KINDS: dict[str, str] = {
    "missing_image": "missing image",
    "undecodable_image": "undecodable image",
    "empty_captions": "empty caption list",
    "unknown_split": "unknown split",
    "duplicate_image": "duplicate image",
    "duplicate_caption_id": "duplicate caption id",
    "malformed_record": "malformed record",
}
EXAMPLES_PER_KIND = 5


@dataclass
class Entry:
    """One image as its annotation file describes it (nothing checked yet except the record's shape).

    `where` names the record for messages (`reid_raw.json entry 12`, `data.jsonl line 3`);
    `error` is set (and the other fields may be None) when the record itself is malformed.
    `pid` is the dataset's own identity id (person sets; None for caption sets). `caption_ids`:
    one id per caption as the annotation gives them (COCO / Flickr30K `sentids`), or None when
    it has none (the writer then derives `{image_id}#{k}`).
    """

    where: str
    split: str | None = None
    path: Path | None = None  # absolute image path
    rel: str = ""  # the image path as shown to users and stored as the sample's `source`
    image_id: str = ""
    captions: list[str] | None = None
    pid: int | None = None
    error: str | None = None
    caption_ids: list[str] | None = None
    member: tuple[int, int] | None = None  # (offset, size) of the image inside the file `path` (tars)


@dataclass
class Problems:
    """Bad input found so far: counts per kind plus the first few examples (path or record + why)."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, kind: str, example: str) -> None:
        assert kind in BAD_INPUT_KINDS, kind
        self.counts[kind] += 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < EXAMPLES_PER_KIND:
            shown.append(example)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def summary(self) -> str:
        """`2 missing image, 1 unknown split` (kinds in a fixed order)."""
        return ", ".join(
            f"{self.counts[k]} {label}" for k, label in BAD_INPUT_KINDS.items() if self.counts[k]
        )

    def lines(self) -> list[str]:
        """One line per example, grouped by kind, with a `... and N more` tail per kind."""
        out = []
        for kind, label in BAD_INPUT_KINDS.items():
            if not self.counts[kind]:
                continue
            out.append(f"{label}: {self.counts[kind]}")
            out.extend(f"  {example}" for example in self.examples[kind])
            more = self.counts[kind] - len(self.examples[kind])
            if more > 0:
                out.append(f"  ... and {more} more")
        return out

    def first(self) -> str:
        """The first example of the first kind found (for the one-line error)."""
        for kind in BAD_INPUT_KINDS:
            if self.examples.get(kind):
                return f"{BAD_INPUT_KINDS[kind]}: {self.examples[kind][0]}"
        return ""


class BadInputError(UserError):
    """Bad input found while `--skip-bad` was off: nothing was written. Carries the full `problems`."""

    def __init__(self, message: str, problems: Problems) -> None:
        super().__init__(message)
        self.problems = problems


def clean_caption(text: str) -> str:
    """Collapse every run of whitespace (newlines and tabs included) to one space and strip the ends.

    The shard format stores captions one per line in `txt`, and tokenizers treat all whitespace
    alike, so this changes no caption's meaning; COCO's raw captions carry stray newlines and
    trailing spaces.
    """
    return " ".join(text.split())


def resolve_inside(base: Path, rel: str) -> Path | None:
    """`base / rel` when `rel` is a relative path that stays inside `base`, else None."""
    if not rel or "\x00" in rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        return None
    parts = Path(rel).parts
    if any(part == ".." for part in parts):
        return None
    return base.joinpath(*parts)
