"""The data types: images decoded in memory, images left on disk, and what a data spec provides.

An :class:`ImageSet` holds uint8 images on the host (or memory-mapped from a prepared cache); a
:class:`FileSet` lists files left on disk (listed, not decoded), read by loader workers
(:mod:`fastclr.data.loaders.files`; the tiers: :mod:`fastclr.data.loaders.tiers`); :class:`DataSplits` is what
:func:`fastclr.data.datasets.load` returns for a spec: the images to pretrain on and the labelled
train / test splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastclr.data.badfiles import BadFiles
from fastclr.data.sources.listing import PathList


def count_classes(classes: list[str] | None, labels: torch.Tensor | None) -> int:
    """Number of classes: the named ones, else the largest label + 1 (0 without labels)."""
    if classes:
        return len(classes)
    return int(labels.max()) + 1 if labels is not None and len(labels) else 0


@dataclass
class ImageSet:
    """Decoded images with optional labels.

    images: uint8 [N, 3, H, W]; labels: int64 [N] or None; ids: N strings (file paths or
    indices); classes: label names, or None; mapped: the cache file ``images`` is mapped from,
    read per batch by loader workers (tier b, :mod:`fastclr.data.loaders.mapped`), or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    classes: list[str] | None = None
    mapped: Path | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        """Number of classes: the named ones, else the largest label + 1 (0 without labels)."""
        return count_classes(self.classes, self.labels)

    def subset(self, index: torch.Tensor) -> ImageSet:
        idx = index.tolist()
        return ImageSet(
            self.images[index],
            None if self.labels is None else self.labels[index],
            [self.ids[i] for i in idx],
            self.classes,
        )


@dataclass
class FileSet:
    """Images left on disk, listed but not decoded.

    files: N paths (a ``listing.PathList`` for folders); labels: int64 [N] or None; classes: names
    or None; side: the median short side in px of a sample of the files (``survey.py``; 0: unknown);
    bad: where the files that cannot be decoded are reported when met (``badfiles.py``).
    """

    files: Sequence[Path]
    labels: torch.Tensor | None = None
    classes: list[str] | None = None
    side: int = 0
    bad: BadFiles | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ids(self) -> list[str]:
        return [str(f) for f in self.files]

    @property
    def num_classes(self) -> int:
        """Number of classes: the named ones, else the largest label + 1 (0 without labels)."""
        return count_classes(self.classes, self.labels)

    def subset(self, index: torch.Tensor) -> FileSet:
        files = (
            self.files.take(index.numpy())
            if isinstance(self.files, PathList)
            else [self.files[i] for i in index.tolist()]
        )
        labels = None if self.labels is None else self.labels[index]
        return FileSet(files, labels, self.classes, self.side, self.bad)


@dataclass
class DataSplits:
    """What a spec provides: images to pretrain on, and labelled train/test splits when known.

    Each split is an ImageSet (decoded: tier a, or a mapped cache: tier b, see ``loaders/tiers.py``) or a
    FileSet (files read by loader workers: tier c; ``evalset.decoded`` gives its evaluation views).
    ``skipped`` holds (path, reason) of files that could not be decoded: a list when the set was
    decoded at the start, else the run's ``BadFiles`` tally, filled as the files are met.
    ``sources`` the files the spec was read from (the prepared cache's change check uses them).
    """

    name: str
    pretrain: ImageSet | FileSet
    train: ImageSet | FileSet | None  # labelled training split (evaluation: kNN bank, linear probe)
    test: ImageSet | FileSet | None  # labelled test split (evaluation accuracy)
    skipped: list[tuple[str, str]] | BadFiles = field(default_factory=list)
    sources: Sequence[Path] = field(default_factory=list)
