"""Tar shards (the WebDataset layout): ``--data shards:SPEC``, read sequentially with ``webdataset``.

SPEC is one of:

- a folder written by ``fastclr prepare --format shards`` (``data/write/shards.py``): its ``index.json``
  lists each split's shards with their member keys and labels, so nothing is read to count them;
- a folder of ``*.tar`` files without an index: ``train-*.tar`` (or all of them) is the training
  split, ``val-*.tar`` / ``test-*.tar`` the evaluation split;
- a brace pattern (``/data/in1k/train-{000000..001023}.tar``) or a glob (``/data/*.tar``); a local
  pattern whose file name contains ``train`` takes the files matching it with ``val`` (or ``test``) in
  its place and ``*`` for its braces (``val-*.tar``) as the evaluation split;
- ``pipe:COMMAND`` URLs (``pipe:aws s3 cp s3://bucket/train-{0000..0127}.tar -``) for object stores.

A sample is the tar members sharing a key (``KEY.jpg``, ``KEY.cls``): the image (``jpg``, ``jpeg``,
``png``, ``webp``, ``bmp``), and where present its integer label (``cls``). Without an index, one
pass over the shards (bytes only, no decoding) counts the samples and reads their keys and labels;
for ``pipe:`` URLs that pass downloads every shard once, so write an index (``prepare``) for
remote sets. A sample's identity is its position in the set: shards in the index's (or the sorted
listing's) order, members in tar order; its id is ``SHARD/KEY``.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch

from fastclr.data.badfiles import BadFiles
from fastclr.data.sets import FileSet
from fastclr.data.survey import SAMPLE as SURVEY
from fastclr.data.survey import short_side
from fastclr.errors import UserError

FORMAT = "fastclr-shards"
VERSION = 1
INDEX = "index.json"
IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp")
EVAL_NAMES = ("val", "test")


def webdataset():
    """The optional ``webdataset`` module, or a one-line error naming the extra."""
    try:
        import webdataset as wds
    except ImportError:
        raise UserError("--data shards:... needs the webdataset library: pip install 'fastclr[shards]'") from None
    return wds


@dataclass
class ShardSet(FileSet):
    """Samples in tar shards, listed (from the index or one counting pass) but not read.

    ``files`` are the N sample ids (``SHARD/KEY``); urls: the S shards; members: S int64 arrays,
    the in-tar positions of this set's samples in each shard (a subset leaves out members, never
    reorders them); labels/classes/side/bad as for a FileSet.
    """

    urls: list[str] = field(default_factory=list)
    members: list[np.ndarray] = field(default_factory=list)

    @property
    def counts(self) -> list[int]:
        """Samples of this set in each shard."""
        return [len(m) for m in self.members]

    def subset(self, index: torch.Tensor) -> ShardSet:
        """The samples at ``index``, kept in shard order (sorted: a sequential read cannot reorder)."""
        keep = np.sort(index.numpy())
        starts = np.cumsum([0, *self.counts])
        members = [m[keep[(keep >= lo) & (keep < hi)] - lo] for m, lo, hi in zip(self.members, starts, starts[1:])]
        labels = None if self.labels is None else self.labels[torch.from_numpy(keep)]
        files = [self.files[i] for i in keep.tolist()]  # the sample ids
        return ShardSet(files, labels, self.classes, self.side, self.bad, list(self.urls), members)


def expand(pattern: str) -> list[str]:
    """The URLs of a brace pattern or a glob (``pipe:`` URLs are brace-expanded only)."""
    import braceexpand

    urls = [u for part in pattern.split("::") for u in braceexpand.braceexpand(part)]
    if pattern.startswith("pipe:") or not any(c in pattern for c in "*?["):
        return urls
    return sorted(f for u in urls for f in glob.glob(os.path.expanduser(u)))


def _local_missing(urls: list[str]) -> list[str]:
    return [u for u in urls if not u.startswith(("pipe:", "http:", "https:", "s3:", "gs:")) and not os.path.isfile(u)]


def split_urls(spec: str) -> tuple[list[str], list[str] | None]:
    """(train URLs, evaluation URLs or None) of a shards SPEC without an index."""
    path = Path(spec).expanduser()
    if path.is_dir():
        tars = sorted(str(p) for p in path.glob("*.tar"))
        train = [u for u in tars if Path(u).name.startswith("train")] or [
            u for u in tars if not Path(u).name.startswith(EVAL_NAMES)
        ]
        test = [u for u in tars if Path(u).name.startswith(EVAL_NAMES)] or None
        if not train:
            raise UserError(f"--data shards:{spec}: no .tar shards in this folder; write them with fastclr prepare")
        return train, test
    train = expand(spec)
    if not train or _local_missing(train):
        missing = _local_missing(train)
        raise UserError(
            f"--data shards:{spec}: {'no shard matches' if not train else f'{missing[0]} does not exist'}; "
            "give a folder, a brace pattern (train-{000000..000127}.tar), a glob or pipe:COMMAND URLs"
        )
    if "train" in Path(spec).name and not spec.startswith("pipe:"):
        for name in EVAL_NAMES:  # the evaluation set may hold fewer shards: its braces become a glob
            sibling = re.sub(r"\{[^}]*\}", "*", str(Path(spec).with_name(Path(spec).name.replace("train", name))))
            test = sorted(glob.glob(os.path.expanduser(sibling)))
            if test:
                return train, test
    return train, None


def samples(url: str) -> Iterator[dict]:
    """The samples of one shard, in tar order: dicts of extension -> bytes plus ``__key__``."""
    wds = webdataset()
    yield from wds.tariterators.tarfile_samples([{"url": url}])


def image_bytes(sample: dict) -> bytes | None:
    """The image member of a sample (None: it has none)."""
    for ext in IMAGE_EXTS:
        if ext in sample:
            return sample[ext]
    return None


def label_of(sample: dict) -> int:
    """The sample's integer label (-1: none)."""
    raw = sample.get("cls")
    try:
        return int(raw.decode().strip()) if raw is not None else -1
    except ValueError:
        return -1


def sample_id(url: str, key: str) -> str:
    return f"{url.rsplit('/', 1)[-1]}/{key}"


def count(urls: list[str]) -> list[dict]:
    """One pass over the shards (bytes only): per shard its keys and labels (-1: unlabelled)."""
    out = []
    for url in urls:
        keys, labels = [], []
        try:
            for s in samples(url):
                keys.append(s["__key__"])
                labels.append(label_of(s))
        except Exception as e:  # a truncated or unreadable shard: count what was read
            print(f"fastclr: warning: {url}: read stopped after {len(keys)} samples ({e})")
        out.append({"url": url, "keys": keys, "labels": labels})
    return out


def build(shards: list[dict], classes: list[str] | None, bad=None) -> ShardSet:
    """A ShardSet from per-shard records {"url", "keys", "labels"}."""
    files = [sample_id(s["url"], k) for s in shards for k in s["keys"]]
    raw = np.array([lab for s in shards for lab in s["labels"]], dtype=np.int64)
    labels = torch.from_numpy(raw) if len(raw) and (raw >= 0).all() else None
    members = [np.arange(len(s["keys"]), dtype=np.int64) for s in shards]
    return ShardSet(
        cast(list[Path], files),
        labels,
        classes if labels is not None else None,
        0,
        bad,
        [s["url"] for s in shards],
        members,
    )


def shards_median_side(spec: str, count: int = SURVEY) -> tuple[float, int]:
    """(median short side in px, samples looked at) of a shards SPEC's training images.

    A folder written by ``fastclr prepare`` records it in its index (the writer surveyed the source);
    otherwise the headers of the first ``count`` images of the first training shards are read (bytes
    only up to each header: nothing is decoded). Returns (0.0, 0) when no image could be read.
    """
    folder = Path(spec).expanduser()
    if (folder / INDEX).is_file():
        index = read_index(folder)
        side = int(index.get("side", 0))
        if side > 0:
            train = index["splits"].get("train", {}).get("shards", [])
            return float(side), min(count, sum(int(s.get("count", 0)) for s in train))
    sides: list[int] = []
    for url in split_urls(spec)[0]:
        with contextlib.suppress(Exception):  # a shard that cannot be read is reported when training meets it
            for sample in samples(url):
                data = image_bytes(sample)
                found = short_side(io.BytesIO(data)) if data is not None else None
                if found:
                    sides.append(found)
                if len(sides) >= count:
                    break
        if len(sides) >= count:
            break
    return (float(np.median(sides)) if sides else 0.0), len(sides)


def read_index(folder: Path) -> dict:
    """The folder's ``index.json`` (``data/write/shards.py``), checked."""
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise UserError(
            f"{folder / INDEX}: cannot read the shard index ({e}); write it again with fastclr prepare"
        ) from None
    if index.get("format") != FORMAT or index.get("version") != VERSION:
        raise UserError(f"{folder / INDEX}: not a fastclr shard index of version {VERSION}; prepare the data again")
    return index


def load_shards(
    spec: str, *, out_dir: Path | None = None, max_bad_fraction: float = 0.01
) -> tuple[str, ShardSet, ShardSet | None]:
    """``shards:SPEC`` -> (name, training split, labelled evaluation split or None), reporting bad
    members to one ``BadFiles`` tally (``datasets.load`` makes the DataSplits)."""
    webdataset()
    folder = Path(spec).expanduser()
    if (folder / INDEX).is_file():
        index = read_index(folder)
        sets = {}
        for name, split in index["splits"].items():
            records = [{**s, "url": str(folder / s["name"])} for s in split["shards"]]
            sets[name] = build(records, split.get("classes"))
        train, test, side = sets.get("train"), sets.get("test"), int(index.get("side", 0))
    else:
        train_urls, test_urls = split_urls(spec)
        train = build(count(train_urls), None)
        test = build(count(test_urls), None) if test_urls else None
        side = 0
    if train is None or len(train) == 0:
        raise UserError(f"--data shards:{spec}: the training shards hold no samples")
    bad = BadFiles(out_dir, max_bad_fraction, len(train) + (len(test) if test is not None else 0))
    for s in (train, test):
        if s is not None:
            s.bad, s.side = bad, side
    labelled = train.labels is not None and test is not None and test.labels is not None
    name = folder.name if folder.is_dir() else Path(spec.split("::")[0]).stem
    return name, train, test if labelled else None
