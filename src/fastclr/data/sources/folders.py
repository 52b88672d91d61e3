"""Users' own images: listing a folder or a file list, and decoding all of it.

A sample's identity is its index in a sorted, stable listing (sorted by path relative to the
root), so it is the same on every machine, worker count and process count.

Listing: the folder is walked recursively, following symbolic links but never entering a folder
twice (a link loop cannot derail the scan); hidden files and folders (``.DS_Store``, ``._x.jpg``,
``.git``) and ``__MACOSX`` are ignored; only files with an image suffix are kept.

Bad files: a file that cannot be decoded is left out and reported with its reason, for the policy of
``data/badfiles.py`` (skipped.txt, the warning, the ``max_bad_fraction`` stop before training).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastclr.data.images import BadImage, decode
from fastclr.data.loaders.workers import worker_cap
from fastclr.data.sources.listing import cached_scan
from fastclr.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".avif", ".heic", ".heif")
_IGNORED_DIRS = ("__MACOSX",)


@dataclass
class Listing:
    """Files of one split in sample order, with labels when the source has them.

    files: N paths (a ``listing.PathList`` for folders); labels: int64 [N] class indices or None;
    classes: class names or None.
    """

    files: Sequence[Path]
    labels: np.ndarray | None  # int64 [N]
    classes: list[str] | None


def _hidden(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_DIRS


def scan(root: Path) -> list[Path]:
    """Every image file below ``root`` (recursive, links followed once, hidden names skipped), sorted."""
    return [root / r for r in scan_relative(root)]


def scan_relative(root: Path, walked: list[str] | None = None) -> list[str]:
    """:func:`scan` as POSIX paths relative to ``root``: one small string per file, no Path objects.
    ``walked`` receives every folder visited, those without images too (the listing cache watches them)."""
    found: list[str] = []
    seen: set[tuple[int, int]] = set()
    base = len(os.path.join(str(root), ""))
    for top, dirs, files in os.walk(root, followlinks=True):
        try:
            st = os.stat(top)
        except OSError:
            dirs[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:  # a link back to a folder already walked: a loop or a duplicate
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        if walked is not None:
            walked.append(top)
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        rel = top[base:].replace(os.sep, "/") + "/" if len(top) > base else ""
        found.extend(rel + f for f in files if not _hidden(f) and f.lower().endswith(IMAGE_SUFFIXES))
    found.sort()
    return found


def list_folder(root: Path, classes: list[str] | None = None) -> Listing:
    """A folder's images (the cached listing, ``listing.py``); labels from the first-level folder
    names when every image is in one. Decodes nothing."""
    files = cached_scan(root, scan_relative)
    if not len(files):
        raise UserError(f"{root}: no images found ({', '.join(IMAGE_SUFFIXES)}); point --data at a folder of images")
    top = np.char.partition(files.relative, b"/")  # [N, 3]: first part, separator, rest
    if not (top[:, 1] == b"/").all():
        return Listing(files, None, None)
    found_bytes, labels = np.unique(top[:, 0], return_inverse=True)
    found = [c.decode() for c in found_bytes]
    labels = labels.astype(np.int64).reshape(-1)
    if classes is not None:  # a test split may hold fewer classes (none of its images in some), never others
        unknown = sorted(set(found) - set(classes))
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise UserError(
                f"{root}: class folders {shown} are not among the train split's {len(classes)} classes; a test split "
                "needs the train split's class folders (it may leave some out)"
            )
        lookup = np.array([classes.index(c) for c in found], dtype=np.int64)
        return Listing(files, lookup[labels], classes)
    return Listing(files, labels, found)


def read_list(path: Path, classes: list[str] | None = None) -> Listing:
    """A CSV or text file of ``path[,label]`` lines, paths relative to the list's folder.

    Blank lines and lines starting with ``#`` are ignored, and so is a first line ``path[,label]``.
    Either every line has a label or none has; labels are class names (sorted to indices).
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"--data {path}: cannot read the list ({getattr(e, 'strerror', None) or e})") from None
    rows = [
        (n, r)
        for n, r in enumerate(csv.reader(text.splitlines()), 1)
        if r and r[0].strip() and not r[0].lstrip().startswith("#")
    ]
    if rows and rows[0][1][0].strip().lower() == "path":
        rows = rows[1:]
    if not rows:
        raise UserError(f"--data {path}: the list names no files; write one 'path[,label]' per line")
    with_label = [len(r) > 1 and r[1].strip() != "" for _, r in rows]
    if any(with_label) and not all(with_label):
        n = rows[with_label.index(False)][0]
        raise UserError(f"--data {path}: line {n} has no label but other lines have one; label every line or none")
    base = path.parent
    files = [base / r[0].strip() for _, r in rows]
    missing = [(n, r[0].strip()) for (n, r), f in zip(rows, files) if not f.exists()]
    if missing:
        n, name = missing[0]
        raise UserError(
            f"--data {path}: {len(missing)} listed files do not exist (first: line {n}, {name!r}); paths are "
            f"relative to {base}"
        )
    if not all(with_label):
        return Listing(files, None, None)
    names = [r[1].strip() for _, r in rows]
    found = sorted(set(names))
    if classes is not None:  # a test list may hold fewer classes, never others
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise UserError(
                f"--data {path}: labels {unknown} are not among the train split's classes {classes}; both lists need "
                "the same labels"
            )
        found = classes
    lookup = {c: i for i, c in enumerate(found)}
    return Listing(files, np.array([lookup[c] for c in names], dtype=np.int64), found)


def _decode_one(job: tuple[str, int]) -> tuple[np.ndarray | None, tuple[int, int], str]:
    path, size = job
    try:
        pixels, hw = decode(path, size)
        return pixels, hw, ""
    except BadImage as e:
        return None, (0, 0), e.reason


def iter_decode(
    files: Sequence[Path], size: int, workers: int = 0
) -> Iterator[tuple[np.ndarray | None, tuple[int, int], str]]:
    """Decode files in order with ``images.decode``: (uint8 [3, size, size] or None, (h, w), reason).

    Args:
        workers: CPU processes (0: this process). The order of the results is the order of ``files``.
    """
    jobs = [(str(f), size) for f in files]
    if workers <= 0 or len(jobs) < 64:
        yield from map(_decode_one, jobs)
        return
    with ProcessPoolExecutor(max(1, worker_cap(workers))) as pool:  # this rank's share of the node's cores
        yield from pool.map(_decode_one, jobs, chunksize=64)


def decode_all(
    files: Sequence[Path], size: int, workers: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[tuple[str, str]]]:
    """Decode every file; bad ones are left out.

    Returns:
        images uint8 [G, 3, size, size] of the G good files, keep bool [N] (which files are good),
        hw int64 [G, 2] (each good image's full-resolution height and width), skipped [(path, reason)].
    """
    images = np.empty((len(files), 3, size, size), dtype=np.uint8)
    keep = np.zeros(len(files), dtype=bool)
    hw = np.zeros((len(files), 2), dtype=np.int64)
    skipped = []
    for i, (pixels, shape, reason) in enumerate(iter_decode(files, size, workers)):
        if pixels is None:
            skipped.append((str(files[i]), reason))
            continue
        images[i], keep[i], hw[i] = pixels, True, shape
    if not keep.all():
        images, hw = images[keep], hw[keep]
    return images, keep, hw, skipped
