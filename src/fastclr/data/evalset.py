"""The evaluation transform over a whole split, in batches, by loader workers, in bounded memory.

Every command that needs the images of a split at the training size S (``embed``, ``knn``,
``linear``, ``finetune``, ``distill``, ``report``, ``show-augment`` and the end-of-pretraining
evaluation) reads a file set through here: workers decode each file with ``images.decode`` (short
side resized to S, bicubic and antialiased, then the centre S x S crop: the evaluation view of
the linear protocol), a batch at a time, in dataset order. ``decoded`` collects the batches into an
ImageSet, in memory when it fits the budget and otherwise in an unlinked memory-mapped scratch
file (``$FASTCLR_CACHE/scratch``), so no process holds more than the batches in flight. A file
that cannot be decoded is left out and reported (``badfiles.py``).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fastclr.data.badfiles import BadFiles
from fastclr.data.images import BadImage, decode
from fastclr.data.loaders.shards import eval_batches as shard_eval_batches
from fastclr.data.loaders.tiers import decoded_bytes
from fastclr.data.loaders.workers import in_order, worker_cap
from fastclr.data.sets import DataSplits, FileSet, ImageSet
from fastclr.data.sources.listing import cache_dir
from fastclr.data.sources.shards import ShardSet
from fastclr.data.subsets import balanced_subset

Batch = tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]


class _Chunks(torch.utils.data.Dataset):
    """Chunk k -> (index int64 [b], uint8 [b, 3, S, S] with zeros for bad files, [(path, reason)])."""

    def __init__(self, files, size: int, batch_size: int):
        self.files, self.size, self.batch_size = files, size, batch_size

    def __len__(self) -> int:
        return -(-len(self.files) // self.batch_size)

    def __getitem__(self, k: int) -> Batch:
        lo = k * self.batch_size
        index = torch.arange(lo, min(lo + self.batch_size, len(self.files)))
        out = np.zeros((index.shape[0], 3, self.size, self.size), dtype=np.uint8)
        bad = []
        for j, i in enumerate(index.tolist()):
            try:
                out[j] = decode(self.files[i], self.size)[0]
            except BadImage as e:
                bad.append((e.path, e.reason))
        return index, torch.from_numpy(out), bad


def batches(data: FileSet, size: int, batch_size: int = 256, workers: int = 0) -> Iterator[Batch]:
    """(index [b], evaluation views uint8 [b, 3, S, S], bad files) of every file, in dataset order."""
    workers = worker_cap(workers)  # this process's share of the node's cores under torchrun
    if isinstance(data, ShardSet):  # tar shards: read sequentially (loaders/shards.py)
        yield from shard_eval_batches(data, size, batch_size, workers)
        return
    yield from in_order(_Chunks(data.files, size, batch_size), workers)


def scratch(shape: tuple[int, ...]) -> np.memmap:
    """An unlinked uint8 memory-mapped file of ``shape``: gone when the last mapping is."""
    folder = cache_dir().parent / "scratch"
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=folder, suffix=".u8", delete=False) as f:
        path = Path(f.name)
    try:
        return np.memmap(path, dtype=np.uint8, mode="w+", shape=shape)
    finally:
        path.unlink(missing_ok=True)


def decoded(
    data: ImageSet | FileSet,
    size: int,
    *,
    workers: int = 0,
    limit: int = 0,
    bad: BadFiles | None = None,
    batch_size: int = 256,
) -> ImageSet:
    """The split as an ImageSet of evaluation views at ``size`` (an ImageSet is returned as it is).

    Args:
        limit: bytes the decoded images may take in memory; above it they go to a scratch memmap
            (0: always memory).
        bad: where unreadable files are reported (they are left out of the result).
    """
    if isinstance(data, ImageSet):
        return data
    n = len(data)
    shape = (n, 3, size, size)
    rows = scratch(shape) if limit and decoded_bytes(n, size) > limit else np.empty(shape, dtype=np.uint8)
    keep = np.ones(n, dtype=bool)
    put = 0
    for index, images, failed in batches(data, size, batch_size, workers):
        good = np.ones(index.shape[0], dtype=bool)
        if failed:
            names = {p for p, _ in failed}
            good = np.array([str(data.files[i]) not in names for i in index.tolist()])
            keep[index.numpy()[~good]] = False
        rows[put : put + int(good.sum())] = images.numpy()[good]
        put += int(good.sum())
        if bad is not None:
            bad.met(index.shape[0], failed)
    pick = torch.from_numpy(np.nonzero(keep)[0])
    labels = None if data.labels is None else data.labels[pick]
    files = data.files
    return ImageSet(torch.from_numpy(rows[:put]), labels, [str(files[i]) for i in pick.tolist()], data.classes)


def eval_splits(
    data: DataSplits, size: int, *, max_images: int = 0, seed: int = 0, workers: int = 0, limit: int = 0
) -> DataSplits:
    """``data`` with its labelled train split cut to a class-balanced, seeded subset of ``max_images``
    (0: all) and both labelled splits as evaluation views at ``size`` (the kNN bank and the probe's data).

    The pretraining split is left as it is.
    """
    bad = data.skipped if isinstance(data.skipped, BadFiles) else None
    train = test = None
    if data.train is not None:
        train = decoded(balanced_subset(data.train, max_images, seed), size, workers=workers, limit=limit, bad=bad)
    if data.test is not None:
        test = decoded(data.test, size, workers=workers, limit=limit, bad=bad)
    return DataSplits(data.name, data.pretrain, train, test, data.skipped, data.sources)


def pretrain_view(data: ImageSet | FileSet, size: int, *, workers: int = 0, limit: int = 0) -> ImageSet:
    """The pretraining split as an ImageSet (evaluation views at ``size`` for a file set)."""
    return decoded(data, size, workers=workers, limit=limit, bad=getattr(data, "bad", None))


def head(data: ImageSet | FileSet, count: int, size: int) -> ImageSet:
    """The first ``count`` images as an ImageSet (a file set's at ``size``, its evaluation views):
    what ``show-augment`` and the report draw view pairs from."""
    first = data.subset(torch.arange(min(count, len(data))))
    return decoded(first, size)
