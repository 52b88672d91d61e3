"""A folder's image files without decoding anything: a compact path list and a listing cache.

``PathList`` holds N paths as one numpy byte array (a few bytes per file, no Python object per
file), so a listing of 1.28 M files costs tens of MB and loader workers share it without
copy-on-write growth (no reference counts to touch).

The cache: ``scan`` (``folders.scan``) of a large folder takes seconds to minutes on network
storage, so its result is kept in ``$FASTCLR_CACHE/listings/`` (default ``~/.cache/fastclr``: a
JSON record and the paths as a ``.npy`` byte array, loaded without a Python object per file),
keyed on the folder's real path and valid while every directory it walked has the same
modification time (adding, removing or renaming a file changes its directory's mtime; a stat per
directory, about 1,000 for ImageNet, checks that). A cache that cannot be written is not an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

VERSION = 2  # 2: the paths in KEY.npy beside the KEY.json record


class PathList(Sequence[Path]):
    """N file paths as a numpy array of UTF-8 bytes below ``root``: ``paths[i]`` is a Path."""

    def __init__(self, root: Path | str, relative: np.ndarray):
        self.root = str(root)
        self.relative = relative  # bytes [N] (numpy 'S' dtype)

    @classmethod
    def of(cls, root: Path | str, paths: Sequence[Path | str]) -> PathList:
        """From absolute or root-relative paths (each must lie below ``root`` when absolute)."""
        rel = [os.path.relpath(str(p), str(root)).encode() if os.path.isabs(str(p)) else str(p).encode() for p in paths]
        return cls(root, np.array(rel, dtype=bytes) if rel else np.zeros(0, dtype="S1"))

    def __len__(self) -> int:
        return int(self.relative.shape[0])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return PathList(self.root, self.relative[i])
        return Path(self.root, self.relative[i].decode())

    def __iter__(self) -> Iterator[Path]:
        for r in self.relative:
            yield Path(self.root, r.decode())

    def take(self, index: Sequence[int] | np.ndarray) -> PathList:
        """The paths at ``index``, in that order."""
        return PathList(self.root, self.relative[np.asarray(index, dtype=np.int64)])

    @staticmethod
    def join(*lists: PathList) -> PathList:
        """The paths of every list, in order, below their common root (still one byte array)."""
        root = os.path.commonpath([p.root for p in lists])
        parts = []
        for p in lists:
            prefix = os.path.relpath(p.root, root).replace(os.sep, "/")
            parts.append(p.relative if prefix == "." else np.char.add(f"{prefix}/".encode(), p.relative))
        return PathList(root, np.concatenate(parts) if parts else np.zeros(0, dtype="S1"))


def cache_dir() -> Path:
    return Path(os.environ.get("FASTCLR_CACHE") or Path.home() / ".cache" / "fastclr") / "listings"


def _key(root: Path) -> Path:
    return cache_dir() / f"{hashlib.sha256(str(root).encode()).hexdigest()[:24]}.json"


def _dir_state(dirs: list[str]) -> list[int] | None:
    """mtime_ns of each directory, or None if one is gone."""
    try:
        return [os.stat(d).st_mtime_ns for d in dirs]
    except OSError:
        return None


def _walked_dirs(root: Path, relative: list[str]) -> list[str]:
    """Every directory between ``root`` and the files (the ones whose mtimes key the cache)."""
    parts = {""}
    for r in relative:
        d = r.rpartition("/")[0]
        while d not in parts:
            parts.add(d)
            d = d.rpartition("/")[0]
    return sorted(os.path.join(str(root), d) if d else str(root) for d in parts)


def cached_scan(root: Path, scan: Callable[[Path, list[str]], list[str]]) -> PathList:
    """``scan(root, walked)`` (sorted POSIX paths relative to ``root``; ``walked`` receives every folder it
    visits) as a PathList, from the cache when none of those folders has changed since: a folder that held
    no image at the last scan is watched too, so images added to it are seen."""
    real = Path(os.path.realpath(root))
    key = _key(real)
    try:
        saved = json.loads(key.read_text())
        if (
            saved.get("version") == VERSION
            and saved["root"] == str(root)
            and _dir_state(saved["dirs"]) == saved["mtimes"]
        ):
            relative = np.load(key.with_suffix(".npy"), allow_pickle=False)
            if relative.dtype.kind == "S" and len(relative) == saved["count"]:
                return PathList(root, relative)  # no Python object per file, so nothing left behind to fork
    except (OSError, ValueError, KeyError, TypeError):
        pass
    started = time.time_ns()
    walked: list[str] = []
    files = scan(root, walked)
    dirs = sorted(set(walked) | set(_walked_dirs(root, files)))
    mtimes = _dir_state(dirs)
    listed = PathList.of(root, files)
    if mtimes is not None and max(mtimes, default=0) < started:  # nothing changed while it was scanned
        record = {"version": VERSION, "root": str(root), "dirs": dirs, "mtimes": mtimes, "count": len(listed)}
        try:
            key.parent.mkdir(parents=True, exist_ok=True)
            tmp = key.with_suffix(f".{os.getpid()}.tmp")
            with open(tmp, "wb") as f:
                np.save(f, listed.relative, allow_pickle=False)
            os.replace(tmp, key.with_suffix(".npy"))  # the files first, then the record that validates them
            tmp.write_text(json.dumps(record))
            os.replace(tmp, key)
        except OSError:
            pass
    return listed
