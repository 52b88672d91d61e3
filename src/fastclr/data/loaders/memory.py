"""Batches from images held in memory (on the training device for the fast path).

Each epoch shuffles the whole data set with a generator keyed on (seed, epoch), so the order is
the same whatever the number of processes; global batch b of an epoch is positions
[b*B, (b+1)*B) of that permutation, and process r of k takes its r-th slice of B/k. The last
partial batch is dropped (as the reference code does), so every step sees a full global batch.
The loaders of files, shards and mapped caches (``files.py``, ``shards.py``, ``mapped.py``) use the same order.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from fastclr.data.loaders.base import Batch, RawImages
from fastclr.data.loaders.order import batch_index, epoch_order


class InMemoryLoader:
    """Yields RawImages (index [b], images uint8 [b, 3, H, W]) on ``device``; b = batch_size / world_size.

    Args:
        images: uint8 [N, 3, H, W] (moved to ``device`` once); for a text set its tokens [N, 2, L], with
            ``batch=Tokens``.
        batch_size: the global batch B.
        rank, world_size: this process's slice of every global batch.
        batch: the batch type the rows make (``base.py``).
    """

    def __init__(
        self,
        images: torch.Tensor,
        batch_size: int,
        seed: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        batch: type[Batch] = RawImages,
    ):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.images = images.to(device)
        self.batch_size = batch_size
        self.local = batch_size // world_size
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.device = device
        self.batch: type[Batch] = batch

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.images.shape[0] // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of sample indices (int64 [N], on the CPU)."""
        return epoch_order(self.images.shape[0], self.seed, epoch)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from step ``start`` on (for resuming mid-epoch)."""
        perm = self.order(epoch).to(self.device)
        for b in range(start, len(self)):
            index = batch_index(perm, b, self.batch_size, self.rank, self.world_size)
            yield self.batch(index, self.images[index])
