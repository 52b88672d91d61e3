"""Tier (b): a prepared cache larger than the memory budget, read per batch by loader workers.

Each worker opens the cache's ``.u8`` file as a read-only ``np.memmap`` and copies out the rows of
its batch, so only the batches in flight exist as private memory; the OS page cache holds the
file's pages once for every worker and rank. Order and batching are those of
``memory.InMemoryLoader`` (same keyed permutation, same per-rank slices), and the device then
augments the uint8 batch exactly as it does an in-memory one, so a run on tier (b) equals a run on
tier (a) step for step.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from fastclr.data.loaders.base import Batch, RawImages
from fastclr.data.loaders.order import batch_index, epoch_order
from fastclr.data.loaders.workers import EpochSampler, epoch_loader, guarded


class _Rows(torch.utils.data.Dataset):
    """Batch (epoch, b) -> (index int64 [b], images uint8 [b, 3, S, S]); runs in the workers."""

    def __init__(self, path: Path, shape: tuple[int, ...], batch_size: int, seed: int, rank: int, world_size: int):
        self.path, self.shape, self.batch_size, self.seed = path, shape, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self._map: np.memmap | None = None
        self._perm: tuple[int, torch.Tensor] | None = None

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, b = key
        if self._map is None:  # opened in the worker, never pickled
            self._map = np.memmap(self.path, dtype=np.uint8, mode="r", shape=self.shape)
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_order(self.shape[0], self.seed, epoch))
        index = batch_index(self._perm[1], b, self.batch_size, self.rank, self.world_size)
        order = index.argsort()  # read in file order, hand back in batch order
        rows = np.empty((index.shape[0], *self.shape[1:]), dtype=np.uint8)
        rows[order.numpy()] = self._map[index[order].numpy()]
        return index, torch.from_numpy(rows)


class MappedLoader:
    """Yields (index [b], images uint8 [b, 3, S, S]) on ``device``; b = batch_size / world_size.

    Args:
        path: the cache's ``{split}.images.u8``; shape: (N, 3, S, S).
        workers: loader processes (0: this process reads the batches).
        resume: the command that resumes the run, named if a worker dies.
    """

    def __init__(
        self,
        path: Path,
        shape: tuple[int, ...],
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
        resume: str = "",
    ):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch_size, self.device, self.resume = shape[0], batch_size, device, resume
        self.sampler = EpochSampler(len(self))
        rows = _Rows(path, shape, batch_size, seed, rank, world_size)
        self.loader = epoch_loader(rows, self.sampler, workers, device.type == "cuda", ignore_sigint=False)

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.n // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from step ``start`` on (for resuming mid-epoch)."""
        self.sampler.epoch, self.sampler.start = epoch, start
        for index, images in guarded(self.loader, self.resume):
            yield RawImages(index.to(self.device, non_blocking=True), images.to(self.device, non_blocking=True))
