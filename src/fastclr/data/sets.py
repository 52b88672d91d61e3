"""The data types: images decoded in memory, images left on disk, and what a data spec provides.

An :class:`ImageSet` holds uint8 images on the host (or memory-mapped from a prepared cache); a
:class:`FileSet` lists files too large to hold decoded, read by the streaming loader
(:mod:`fastclr.data.stream`); :class:`DataSplits` is what :func:`fastclr.data.datasets.load`
returns for a spec: the images to pretrain on and the labelled train / test splits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch


def count_classes(classes: list[str] | None, labels: torch.Tensor | None) -> int:
    """Number of classes: the named ones, else the largest label + 1 (0 without labels)."""
    if classes:
        return len(classes)
    return int(labels.max()) + 1 if labels is not None and len(labels) else 0


@dataclass
class ImageSet:
    """Decoded images with optional labels.

    images: uint8 [N, 3, H, W]; labels: int64 [N] or None; ids: N strings (file paths or
    indices); classes: label names, or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    classes: list[str] | None = None

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
class DataSplits:
    """What a spec provides: images to pretrain on, and labelled train/test splits when known.

    ``pretrain`` is an in-memory ImageSet, or a FileSet streamed from disk for images larger than
    the training size. ``skipped`` lists (path, reason) of files that could not be decoded;
    ``sources`` the files the spec was read from (the prepared cache's change check uses them).
    """

    name: str
    pretrain: ImageSet | FileSet
    train: ImageSet | None  # labelled training split (evaluation: kNN bank, linear probe)
    test: ImageSet | None  # labelled test split (evaluation accuracy)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)


@dataclass
class FileSet:
    """Images left on disk: files [N], hw int64 [N, 2] (full-resolution height, width), optional labels."""

    files: list[Path]
    hw: torch.Tensor
    labels: torch.Tensor | None = None
    classes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.files)

    @property
    def ids(self) -> list[str]:
        return [str(f) for f in self.files]

    def subset(self, index: torch.Tensor) -> FileSet:
        idx = index.tolist()
        return FileSet(
            [self.files[i] for i in idx],
            self.hw[index],
            None if self.labels is None else self.labels[index],
            self.classes,
        )
