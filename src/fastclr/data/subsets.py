"""Seeded, class-balanced subsets: ``max_images`` and ``eval_max_images`` of a data set, and the labelled
fractions of semi-supervised fine-tuning. A subset depends on nothing but the labels, the count and the seed."""

from __future__ import annotations

from typing import Protocol, TypeVar

import torch

from fastclr.method.rng import keyed_generator

S = TypeVar("S", bound="Subsettable")


class Subsettable(Protocol):
    """A data set a subset can be taken of (ImageSet, FileSet, ShardSet, TextSet)."""

    labels: torch.Tensor | None

    def __len__(self) -> int: ...

    def subset(self: S, index: torch.Tensor) -> S: ...


def balanced_indices(labels: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced subset of ``min(count, N)`` samples.

    Equal shares per class, the first (count mod C) classes taking one more; a class smaller than
    its share gives all it has and the rest is shared among the others the same way, so the subset
    always holds ``count`` samples. Each class's pick is a permutation keyed on (seed, class), so the
    subset depends on nothing but the labels, the count and the seed. Used for ``max_images`` and
    for the semi-supervised label fractions.
    """
    classes = labels.unique().tolist()
    members = {c: torch.nonzero(labels == c).flatten() for c in classes}
    quotas = class_quotas([len(members[c]) for c in classes], min(count, len(labels)))
    picks = []
    for c, quota in zip(classes, quotas):
        order = torch.randperm(len(members[c]), generator=keyed_generator(seed, c, 0x1ABE1))
        picks.append(members[c][order[:quota]])
    return torch.cat(picks).sort().values


def class_quotas(sizes: list[int], count: int) -> list[int]:
    """How many samples each class gives to a balanced subset of ``count`` (at most ``sum(sizes)``)."""
    quotas = [0] * len(sizes)
    left = min(count, sum(sizes))
    while left > 0:
        open_ = [i for i, n in enumerate(sizes) if quotas[i] < n]
        share, extra = divmod(left, len(open_))
        for rank, i in enumerate(open_):
            give = min(sizes[i] - quotas[i], share + (1 if rank < extra else 0))
            quotas[i] += give
            left -= give
    return quotas


def balanced_subset(data: S, count: int, seed: int) -> S:
    """A seeded subset of ``count`` samples (the whole set for 0), class-balanced when labels are known."""
    if count <= 0 or count >= len(data):
        return data
    if data.labels is None:
        pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:count].sort().values
    else:
        pick = balanced_indices(data.labels, count, seed)
    return data.subset(pick)
