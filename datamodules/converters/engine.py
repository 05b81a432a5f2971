"""The conversion pipeline every format shares: annotation entries in, shards + manifest out.

    entries (format module) -> plan (pass 1) -> load + validate images (threads) -> DatasetWriter

Pass 1 (no image bytes read): map each entry's split to train/val/test, clean its captions
(whitespace collapsed; empty ones dropped; Karpathy sets keep the first five), reject
duplicates (same file, or same image id, anywhere in the dataset: one image in two splits would
leak test data into training) and missing files. With bad input and no `--skip-bad` it stops
here: nothing is written, exit 2, the report lists every problem found.

Pass 2 streams the planned images in annotation order through a small thread pool (reading and
decoding release the GIL) and into the writer, which owns crash safety: shards go to a hidden
staging folder and only a completed conversion writes the manifest and moves the folder into
place. An interrupted conversion therefore leaves no manifest (readers say "convert it first"),
and simply rerunning the command does the whole job again. An image that fails to decode here is
bad input too: without `--skip-bad` the remaining images are still checked (so the report is
complete) but nothing more is written, and the conversion is aborted at the end.

Person sets: train identities are renumbered 0..N-1 in order of first appearance among the
images actually written (so dropping bad input can never leave a gap); the dataset's own ids of
train identities are kept in the manifest (`source.train_pid_original[new_id]`). Eval ids are
written as the annotation gives them.
"""

from __future__ import annotations

import os
import re
import shlex
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from tqdm.auto import tqdm

from datamodules.converters.images import BadImage, ImagePayload, load_image, shrink_image
from datamodules.converters.records import BadInputError, Entry, Problems, clean_caption
from datamodules.manifest import SYNTHETIC_NAMES, dataset_dir
from datamodules.writer import SPLIT_ORDER, DatasetWriter
from xmodal_bench.errors import UserError

__all__ = [
    "CONVERTER_VERSION",
    "Annotation",
    "ConversionReport",
    "Format",
    "convert_format",
    "default_workers",
    "format_report",
]

CONVERTER_VERSION = 1
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class Annotation:
    """What a format's reader returns: the entries (may be a generator) and facts for the manifest.

    `info` is filled in by the reader (possibly while `entries` is consumed): at least
    `annotation` (file name) and `annotation_sha256`.
    """

    entries: Iterable[Entry]
    info: dict[str, Any] = field(default_factory=dict)
    total: int | None = None  # number of entries, when known up front (progress bar)


@dataclass(frozen=True)
class Format:
    """One distributable dataset format (see the format modules for each one's decisions)."""

    name: str  # converter name = default dataset name (`coco`, `cuhk`, ...)
    title: str  # human name for reports
    layout: str  # the expected DIR layout, one line (error messages, README)
    obtain: str  # where the raw dataset comes from
    read: Callable[[Path], Annotation]  # DIR -> entries
    splits: Mapping[str, str]  # split as written in the annotation -> split written
    person: bool | None  # identities? None = decided by the data (jsonl)
    max_captions: int | None = None  # Karpathy sets keep the first 5 captions of every image
    published: Mapping[str, tuple[int, int | None]] = field(default_factory=dict)  # split -> (images, ids)


@dataclass
class _Item:
    split: str
    path: Path
    rel: str
    image_id: str
    captions: list[str]
    pid: int | None
    dropped: Counter  # captions the protocol left out of this image, by reason
    caption_ids: list[str] | None = None  # aligned with `captions`; None: derived by the writer
    member: tuple[int, int] | None = None  # (offset, size) inside `path` (images stored in tars)


@dataclass
class ConversionReport:
    """Everything the closing summary shows (also returned to library callers)."""

    format: Format
    dataset: str
    source: Path
    out_dir: Path
    manifest: dict[str, Any]
    seconds: float
    workers: int
    skip_bad: bool
    dropped: Counter
    problems: Problems
    notes: Counter

    @property
    def images(self) -> int:
        return sum(s["images"] for s in self.manifest["splits"].values())

    @property
    def images_per_s(self) -> float:
        return self.images / max(self.seconds, 1e-9)


def default_workers() -> int:
    """Threads that read and check images: I/O-bound and GIL-free, so a few more than cores."""
    return max(1, min(8, 2 * (os.cpu_count() or 1)))


def convert_format(
    fmt: Format,
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    skip_bad: bool = False,
    shard_images: int = 1000,
    workers: int | None = None,
    shorter_side: int | None = None,
    progress: bool = True,
    command: str | None = None,
    protocol: str | None = None,
) -> ConversionReport:
    """Convert the dataset at `source` (as distributed) into `{out}/{dataset}`; see the module docstring.

    `protocol`: `caption` or `person` for formats whose protocol the data decides (jsonl, wds):
    `caption` drops pids, `person` requires one on every image; default: person when any image has one.
    """
    started = time.perf_counter()
    source = Path(source).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    dataset = dataset or fmt.name
    workers = default_workers() if workers is None else max(1, int(workers))
    if shard_images < 1:
        raise UserError("--shard-images must be at least 1")
    if shorter_side is not None and shorter_side < 1:
        raise UserError("--shorter-side must be at least 1 pixel")
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", dataset) or dataset in SYNTHETIC_NAMES:
        raise UserError(
            f"bad dataset name {dataset!r}: use letters, digits, '_', '.', '-' (not {' or '.join(SYNTHETIC_NAMES)})"
        )
    if protocol is not None and (protocol not in ("caption", "person") or fmt.person is not None):
        raise UserError(
            f"--protocol is for the jsonl and wds converters (caption or person); {fmt.name} is always "
            f"{'person' if fmt.person else 'caption'}"
        )
    target = dataset_dir(out, dataset)
    if target == source or target in source.parents:
        raise UserError(f"--out {out} would replace {target}, which holds the source dataset {source}")
    command = command or _command(fmt, source, out, dataset, skip_bad, shard_images, shorter_side, protocol)

    annotation = fmt.read(source)
    problems, dropped = Problems(), Counter()  # dropped: captions left out of the images written
    plan = _plan(fmt, annotation, problems, progress)
    if protocol is not None:
        person = protocol == "person"
    else:
        person = fmt.person if fmt.person is not None else any(item.pid is not None for item in plan)
    if person:
        plan = _require_pids(plan, problems)
    else:
        for item in plan:
            item.pid = None  # a caption set: the gallery is matched by image, not identity
    if problems and not skip_bad:
        raise _bad_input(fmt, source, problems)
    if not plan:
        raise UserError(
            f"{fmt.name}: no usable image in {source}"
            + (f" ({problems.summary()} skipped)" if problems else "")
            + f"; expected: {fmt.layout}"
        )

    notes: Counter = Counter()
    pid_map: dict[int, int] = {}
    writing, written = True, 0
    with (
        DatasetWriter(
            out,
            dataset,
            protocol="person" if person else "caption",
            command=command,
            max_images_per_shard=shard_images,
        ) as writer,
        tqdm(total=len(plan), desc=f"converting {dataset}", unit="img", disable=not progress) as bar,
        warnings.catch_warnings(),
    ):
        warnings.filterwarnings("ignore", module=r"PIL\.")  # EXIF and palette chatter; decoding is checked
        for item, payload in _ordered_map(partial(_load, shorter_side=shorter_side), plan, workers):
            bar.update(1)
            if isinstance(payload, BadImage):
                problems.add(payload.kind, f"{item.path}: {payload}")
                writing = writing and skip_bad
                continue
            if not writing:
                continue
            if payload.reencoded_from:
                notes[f"re-encoded losslessly as PNG ({payload.reencoded_from})"] += 1
            if payload.resized:
                notes[f"downscaled to a shorter side of {shorter_side} px (--shorter-side)"] += 1
            if payload.extension_mismatch:
                notes["stored under the format found in the file, not its name's extension"] += 1
            pid = item.pid
            if person and item.split == "train":
                pid = pid_map.setdefault(item.pid, len(pid_map))  # type: ignore[arg-type]
            writer.add(
                item.split,
                payload.data,
                payload.ext,
                item.image_id,
                item.captions,
                pid,
                item.rel,
                caption_ids=item.caption_ids,
            )
            dropped.update(item.dropped)
            written += 1
        if problems and not skip_bad:
            raise _bad_input(fmt, source, problems)  # the writer aborts: no manifest
        if not written:
            raise UserError(f"{fmt.name}: every image in {source} was bad input ({problems.summary()})")
        writer.source_info = _source_info(
            fmt, source, annotation, dropped, problems, notes, pid_map, skip_bad
        )
    return ConversionReport(
        format=fmt,
        dataset=dataset,
        source=source,
        out_dir=dataset_dir(out, dataset),
        manifest=writer.manifest or {},
        seconds=time.perf_counter() - started,
        workers=workers,
        skip_bad=skip_bad,
        dropped=dropped,
        problems=problems,
        notes=notes,
    )


# -- pass 1 ------------------------------------------------------------------------------------------


def _plan(fmt: Format, annotation: Annotation, problems: Problems, progress: bool) -> list[_Item]:
    plan: list[_Item] = []
    seen_paths: dict[str, str] = {}
    seen_ids: dict[str, str] = {}
    seen_caption_ids: dict[str, str] = {}
    expected = ", ".join(repr(s) for s in fmt.splits)
    with tqdm(
        annotation.entries,
        total=annotation.total,
        desc=f"reading {fmt.name} annotations",
        unit="img",
        disable=not progress,
        leave=False,
    ) as entries:
        for entry in entries:
            if entry.error is not None:
                problems.add("malformed_record", f"{entry.where}: {entry.error}")
                continue
            split = fmt.splits.get(entry.split or "")
            if split is None:
                problems.add("unknown_split", f"{entry.where}: split {entry.split!r} (expected {expected})")
                continue
            assert entry.path is not None and entry.captions is not None
            captions = [clean_caption(c) for c in entry.captions]
            ids = entry.caption_ids
            if ids is not None and len(ids) != len(captions):
                problems.add(
                    "malformed_record",
                    f"{entry.where}: {len(ids)} caption ids for {len(captions)} captions",
                )
                continue
            pairs = [(c, None if ids is None else ids[k]) for k, c in enumerate(captions) if c]
            if not pairs:
                problems.add("empty_captions", f"{entry.rel} ({entry.where})")
                continue
            drops = Counter({"empty captions": len(captions) - len(pairs)})
            if fmt.max_captions is not None and len(pairs) > fmt.max_captions:
                drops[f"captions beyond the first {fmt.max_captions} of an image"] = (
                    len(pairs) - fmt.max_captions
                )
                pairs = pairs[: fmt.max_captions]
            kept = [c for c, _ in pairs]
            kept_ids = None if ids is None else [str(i) for _, i in pairs]
            path_key = os.path.normcase(os.path.normpath(entry.path))
            if entry.member is not None:  # many images in one file (a tar): the member is the image
                path_key = f"{path_key}@{entry.member[0]}"
            first = seen_paths.get(path_key) or seen_ids.get(entry.image_id)
            if first is not None:
                problems.add("duplicate_image", f"{entry.rel} ({entry.where}; also {first})")
                continue
            clash = next((seen_caption_ids[i] for i in kept_ids or () if i in seen_caption_ids), None)
            if clash is not None or (kept_ids is not None and len(set(kept_ids)) != len(kept_ids)):
                problems.add("duplicate_caption_id", f"{entry.rel} ({entry.where}; also {clash or 'itself'})")
                continue
            seen_paths[path_key] = seen_ids[entry.image_id] = entry.where
            seen_caption_ids.update(dict.fromkeys(kept_ids or (), entry.where))
            if not entry.path.is_file():
                problems.add("missing_image", f"{entry.path} ({entry.where})")
                continue
            plan.append(
                _Item(
                    split,
                    entry.path,
                    entry.rel,
                    entry.image_id,
                    kept,
                    entry.pid,
                    +drops,
                    kept_ids,
                    entry.member,
                )
            )
    return plan


def _require_pids(plan: list[_Item], problems: Problems) -> list[_Item]:
    """A person set needs an identity on every image (jsonl files may forget some)."""
    kept = []
    for item in plan:
        if item.pid is None:
            problems.add("malformed_record", f"{item.rel}: no 'pid' in a dataset whose other images have one")
        else:
            kept.append(item)
    return kept


# -- pass 2 ------------------------------------------------------------------------------------------


def _load(item: _Item, shorter_side: int | None = None) -> ImagePayload | BadImage:
    try:
        if item.member is None:
            payload = load_image(item.path)
        else:  # an image inside a tar (wds): its bytes at their offset, its name's extension
            payload = load_image(item.path, item.member, Path(item.rel).suffix)
    except BadImage as exc:
        return exc
    return payload if shorter_side is None else shrink_image(payload, shorter_side)


def _ordered_map(fn: Callable[[T], R], items: list[T], workers: int) -> Iterator[tuple[T, R]]:
    """(item, fn(item)) in input order, computed `workers` at a time with a bounded look-ahead."""
    if workers <= 1:
        for item in items:
            yield item, fn(item)
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="convert")
    pending: deque[tuple[T, Future[R]]] = deque()
    depth = 4 * workers
    it = iter(items)
    try:
        for item in it:
            pending.append((item, pool.submit(fn, item)))
            if len(pending) >= depth:
                break
        while pending:
            item, future = pending.popleft()
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fn, nxt)))
            yield item, future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# -- reporting ---------------------------------------------------------------------------------------


def _command(
    fmt: Format,
    source: Path,
    out: Path,
    dataset: str,
    skip_bad: bool,
    shard_images: int,
    shorter_side: int | None = None,
    protocol: str | None = None,
) -> str:
    parts = ["xmodal-bench", "data", "convert", fmt.name, "--source", str(source), "--out", str(out)]
    if dataset != fmt.name:
        parts += ["--name", dataset]
    if skip_bad:
        parts.append("--skip-bad")
    if shard_images != 1000:
        parts += ["--shard-images", str(shard_images)]
    if shorter_side is not None:
        parts += ["--shorter-side", str(shorter_side)]
    if protocol is not None:
        parts += ["--protocol", protocol]
    return shlex.join(parts)


def _source_info(
    fmt: Format,
    source: Path,
    annotation: Annotation,
    dropped: Counter,
    problems: Problems,
    notes: Counter,
    pid_map: dict[int, int],
    skip_bad: bool,
) -> dict[str, Any]:
    info: dict[str, Any] = {
        "converter": f"datamodules.converters ({fmt.name})",
        "converter_version": CONVERTER_VERSION,
        "source_dir": str(source),
        **annotation.info,
        "dropped": dict(dropped),
        "skipped_bad_input": dict(problems.counts) if skip_bad else {},
        "notes": dict(notes),
    }
    if pid_map:
        info["train_pid_original"] = sorted(pid_map, key=pid_map.__getitem__)
    return info


def _bad_input(fmt: Format, source: Path, problems: Problems) -> BadInputError:
    return BadInputError(
        f"{fmt.name}: {problems.total} bad input(s) in {source}: {problems.summary()} "
        f"(first: {problems.first()}); nothing was written; fix the source or rerun with --skip-bad "
        "to leave them out",
        problems,
    )


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def format_report(report: ConversionReport) -> str:
    """The closing summary: per split images / captions / identities, then everything dropped and why."""
    fmt, splits = report.format, report.manifest["splits"]
    lines = [
        f"converted {fmt.name} ({fmt.title}) from {report.source}",
        f"     into {report.out_dir} ({report.manifest['protocol']} protocol) in {report.seconds:.1f} s: "
        f"{report.images_per_s:,.0f} images/s with {report.workers} reader thread(s)",
        f"  {'split':<8}{'images':>10}{'captions':>11}{'identities':>12}",
    ]
    order = [s for s in SPLIT_ORDER if s in splits] + [s for s in splits if s not in SPLIT_ORDER]
    for name in order:
        s = splits[name]
        lines.append(f"  {name:<8}{s['images']:>10,}{s['captions']:>11,}{_n(s['identities']):>12}")
    differs = [
        f"{name} {images:,} images" + (f" / {ids:,} ids" if ids is not None else "")
        for name, (images, ids) in fmt.published.items()
        if name not in splits
        or splits[name]["images"] != images
        or (ids is not None and splits[name]["identities"] != ids)
    ]
    if differs:
        lines.append(
            f"  note: the published {fmt.title} has {', '.join(differs)} (a subset, or another release?)"
        )
    for what, count in report.dropped.items():
        lines.append(f"  dropped: {count:,} {what}")
    for what, count in report.notes.items():
        lines.append(f"  note: {count:,} image(s) {what}")
    if report.problems:
        lines.append(f"  bad input left out (--skip-bad): {report.problems.summary()}")
        lines.extend(f"    {line}" for line in report.problems.lines())
    else:
        lines.append("  bad input: none")
    return "\n".join(lines)
