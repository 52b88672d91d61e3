"""Data specs -> images.

A spec names where the images come from:

- ``digits``: scikit-learn's 8x8 digits (shipped with the dependency, no download).
- ``cifar10[:ROOT]``, ``cifar100[:ROOT]``: torchvision's on-disk format (``sources/standard.py``); pretrain on
  train, evaluate train -> test. ``stl10[:ROOT]``: pretrain on train + unlabeled, evaluate train -> test.
  ROOT defaults to ``$FASTCLR_DATA`` or ``~/.cache/fastclr/data``; ``download=True`` fetches missing files.
- a folder: ``train/`` with ``test/`` (or ``val/``) gives the evaluation split; class sub-folders are
  labels; a flat folder is unlabeled (pretraining only). Write ``./cifar10`` for a folder of that name.
- a list file (``.csv``, ``.txt``): ``path[,label]`` lines, paths relative to the list's folder; a
  ``train.*`` list with a ``test.*`` (or ``val.*``) list beside it gives the evaluation split.
- ``prepared:DIR``: a cache written by ``fastclr prepare`` (``write/prepare.py``), memory-mapped.
- ``shards:SPEC``: tar shards (a folder written by ``fastclr prepare --format shards``, a brace
  pattern, a glob or ``pipe:`` URLs), read sequentially by loader workers (``sources/shards.py``,
  ``loaders/shards.py``).

Folders and lists are decoded once (``sources/folders.py``, ``images.py``) to uint8 [N, 3, S, S] at the
training size S (short side resized to S, centre crop). When the pretraining images are larger than
S (median short side above S), pretraining instead streams them from disk at full resolution
(``loaders/files.py``: random-resized crop on CPU workers) and only the labelled evaluation splits are held
in memory, at S. A sample's identity is its index in a sorted, stable listing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from fastclr import log
from fastclr.data import badfiles, specs, survey
from fastclr.data.badfiles import BadFiles
from fastclr.data.images import needs_missing_decoder
from fastclr.data.loaders import tiers
from fastclr.data.sets import DataSplits, FileSet, ImageSet
from fastclr.data.sources import cache, folders, standard
from fastclr.data.sources.listing import PathList
from fastclr.data.specs import parse
from fastclr.errors import UserError


def _decode_listing(listing: folders.Listing, size: int, workers: int) -> tuple[ImageSet, list[tuple[str, str]]]:
    images, keep, _, skipped = folders.decode_all(listing.files, size, workers)
    files = [f for f, k in zip(listing.files, keep) if k]
    labels = None if listing.labels is None else torch.from_numpy(np.asarray(listing.labels)[keep])
    return ImageSet(torch.from_numpy(images), labels, [str(f) for f in files], listing.classes), skipped


def _decode_splits(name, train_list, test_list, size, *, out_dir, max_bad_fraction, workers) -> DataSplits:
    """Tier (a) for a folder: decode the train listing (and a test one) now, apply the bad-file policy."""
    train, skipped = _decode_listing(train_list, size, workers)
    test = None
    total = len(train_list.files)
    if test_list is not None:
        test, bad = _decode_listing(test_list, size, workers)
        skipped, total = skipped + bad, total + len(test_list.files)
    badfiles.settle(skipped, total, max_bad_fraction, out_dir)
    if len(train) == 0:
        raise UserError(f"--data {name}: none of the {len(train_list.files)} images could be decoded; see skipped.txt")
    labelled = train.labels is not None
    if test is not None and (test.labels is None or not labelled):
        test = None
    sources = list(train_list.files) + (list(test_list.files) if test_list is not None else [])
    return DataSplits(name, train, train if labelled else None, test, skipped, sources)


def _file_set(listing: folders.Listing, side: float, bad: BadFiles) -> FileSet:
    labels = None if listing.labels is None else torch.from_numpy(np.asarray(listing.labels, dtype=np.int64))
    return FileSet(listing.files, labels, listing.classes, int(side), bad)


def _splits(name, train_list, test_list, size, *, out_dir, max_bad_fraction, workers, limit) -> DataSplits:
    """A folder's tier (``loaders/tiers.py``): decoded now when it fits the budget, else files read by workers."""
    side, _ = survey.median_short_side(train_list.files)
    count = len(train_list.files)
    tier = tiers.folder_tier(count, size, side, limit)
    log.info(tiers.describe(tier, count, size, limit, workers))
    if tier == tiers.MEMORY:
        return _decode_splits(
            name, train_list, test_list, size, out_dir=out_dir, max_bad_fraction=max_bad_fraction, workers=workers
        )
    total = count + (len(test_list.files) if test_list is not None else 0)
    bad = BadFiles(out_dir, max_bad_fraction, total)
    train = _file_set(train_list, side, bad)
    labelled = train.labels is not None
    test = (
        _file_set(test_list, side, bad) if test_list is not None and labelled and test_list.labels is not None else None
    )
    return DataSplits(name, train, train if labelled else None, test, bad, _sources(train_list, test_list))


def _sources(train: folders.Listing, test: folders.Listing | None) -> Sequence[Path]:
    """The files of both listings, without a Python object per file where they are PathLists."""
    if test is None:
        return train.files
    if isinstance(train.files, PathList) and isinstance(test.files, PathList):
        return PathList.join(train.files, test.files)
    return [*train.files, *test.files]


def _test_sibling(path: Path, is_dir: bool) -> Path | None:
    for n in ("test", "val"):
        p = path.parent / (n if is_dir else n + path.suffix)
        if p.is_dir() if is_dir else p.is_file():
            return p
    return None


def listings(spec: str) -> tuple[folders.Listing, folders.Listing | None]:
    """The train (and test) listing of a folder or list spec, without decoding anything."""
    path = Path(spec).expanduser()
    if path.is_file():
        train = folders.read_list(path)
        test_path = _test_sibling(path, False) if path.stem == "train" else None
        return train, (folders.read_list(test_path, train.classes) if test_path and train.labels is not None else None)
    if (path / "train").is_dir():
        train = folders.list_folder(path / "train")
        test_path = _test_sibling(path / "train", True)
        return train, (
            folders.list_folder(test_path, train.classes) if test_path and train.labels is not None else None
        )
    return folders.list_folder(path), None


def sources(spec: str) -> list[Path]:
    """The files a spec is read from (no decoding): what ``prepare`` fingerprints."""
    kind, path = parse(spec)
    if path is None:  # digits: no files
        return []
    if kind in standard.STANDARD:
        return standard.files(kind, path)
    if kind in ("folder", "list"):
        train, test = listings(str(path))
        return list(train.files) + (list(test.files) if test is not None else [])
    return []


def load(
    spec: str,
    image_size: int,
    *,
    out_dir: Path | str | None = None,
    download: bool = False,
    max_bad_fraction: float = 0.01,
    workers: int = 0,
    memory_limit: int = 0,
) -> DataSplits:
    """Resolve a data spec (see the module docstring) to images, in the tier ``loaders/tiers.py`` picks.

    Args:
        image_size: S, the side folders and lists are decoded to (standard sets keep their own size).
        out_dir: where ``skipped.txt`` goes (nowhere if None).
        download: fetch a missing standard set (needs internet).
        max_bad_fraction: stop (UserError) when more of a folder's files than this cannot be decoded.
        workers: CPU processes that decode images (0: this process).
        memory_limit: bytes of decoded images that may be held (0: ``tiers.budget()``).
    """
    kind, path = parse(spec)
    limit = memory_limit or tiers.budget()
    if kind == "digits" or path is None:
        return standard.digits()
    if kind in standard.STANDARD:
        return standard.load(kind, path, download)
    if kind == "prepared":
        return cache.load_prepared(path, sources, limit, workers)
    if kind == "shards":
        from fastclr.data.sources.shards import load_shards

        name, shard_train, shard_test = load_shards(
            spec.partition(":")[2], out_dir=Path(out_dir) if out_dir else None, max_bad_fraction=max_bad_fraction
        )
        labelled = shard_train if shard_test is not None else None
        return DataSplits(name, shard_train, labelled, shard_test, shard_train.bad or [])
    train, test = listings(str(path))
    name = path.stem if kind == "list" else path.name
    return _splits(
        name,
        train,
        test,
        image_size,
        out_dir=Path(out_dir) if out_dir is not None else None,
        max_bad_fraction=max_bad_fraction,
        workers=workers,
        limit=limit,
    )


def median_side(spec: str) -> tuple[float, int, int | None] | None:
    """(median short side in px, files sampled, train images or None when not counted) of a folder, list or
    shards spec's train images, headers only (``survey.py``, ``shards.shards_median_side``); None for any
    other spec (digits, standard sets, prepared caches, texts)."""
    if specs.is_text(spec):
        return None
    kind, path = parse(spec)
    count: int | None = None
    why = "see whether they are images"
    if kind == "shards":
        from fastclr.data.sources.shards import shards_median_side

        side, sampled = shards_median_side(str(path))
    elif kind in ("folder", "list"):
        train, _ = listings(str(path))
        (side, sampled), count = survey.median_short_side(train.files), len(train.files)
        why = needs_missing_decoder(train.files[0]) or why
    else:
        return None
    if sampled == 0:
        raise UserError(f"--data {spec}: none of the sampled image files could be read; {why}")
    return side, sampled, count
