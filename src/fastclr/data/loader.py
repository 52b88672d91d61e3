"""Batches from images held in memory (on the training device for the fast path).

Each epoch shuffles the whole data set with a generator keyed on (seed, epoch), so the order is
the same whatever the number of processes; global batch b of an epoch is positions
[b*B, (b+1)*B) of that permutation, and process r of k takes its r-th slice of B/k. The last
partial batch is dropped (as the reference code does), so every step sees a full global batch.
The streaming loader for large images (``stream.py``) uses the same order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import torch

from fastclr.data.order import batch_index, epoch_order
from fastclr.data.sets import FileSet
from fastclr.data.workers import worker_cap


class Loader(Protocol):
    """What every pretraining loader is (in memory, mapped, streamed files, shards): its steps per epoch,
    and the epoch's batches from a step on (resume is exact at step granularity). A batch is (index int64
    [b], images): uint8 [b, 3, H, W] (raw images: the step draws the views), uint8 [V, b, 3, S, S] (views
    cropped by loader workers: the step adds the pixel ops) or float [V*b, 3, S, S] (views finished by
    CPU workers); text: token tensors [b, 2, L]. ``train.step.make_views`` turns any of them into views."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]: ...


class InMemoryLoader:
    """Yields (index [b], images uint8 [b, 3, H, W]) on ``device``; b = batch_size / world_size.

    Args:
        images: uint8 [N, 3, H, W] (moved to ``device`` once).
        batch_size: the global batch B.
        rank, world_size: this process's slice of every global batch.
    """

    def __init__(
        self, images: torch.Tensor, batch_size: int, seed: int, device: torch.device, rank: int = 0, world_size: int = 1
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

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.images.shape[0] // self.batch_size

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's permutation of sample indices (int64 [N], on the CPU)."""
        return epoch_order(self.images.shape[0], self.seed, epoch)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch`` from step ``start`` on (for resuming mid-epoch)."""
        perm = self.order(epoch).to(self.device)
        for b in range(start, len(self)):
            index = batch_index(perm, b, self.batch_size, self.rank, self.world_size)
            yield index, self.images[index]


def build_loader(
    source,
    batch_size: int,
    seed: int,
    device: torch.device,
    *,
    views: int,
    aug,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    resume: str = "",
    decode: str = "cpu",
):
    """The loader for a pretraining source, by tier (``tiers.py``): InMemoryLoader for a decoded
    ImageSet (images on the device) or a text set (its token tensors, :mod:`fastclr.data.text`),
    mapped.MappedLoader for a cache over the memory budget, stream.StreamLoader for a FileSet
    (decoded and cropped by ``workers`` CPU processes). ``resume`` is the command named when a
    loader worker dies. A ShardSet (``shards.py``) is read by shard_loader.ShardLoader, its JPEGs
    decoded where ``decode`` (``gpu_decode.decode_mode``) says."""
    from fastclr.data.mapped import MappedLoader
    from fastclr.data.shards import ShardSet
    from fastclr.data.stream import StreamLoader

    workers = worker_cap(workers)  # more processes than cores only add contention
    if isinstance(source, ShardSet):
        from fastclr.data.gpu_decode import decode_mode
        from fastclr.data.shard_loader import ShardLoader

        return ShardLoader(
            source, batch_size, seed, device, views=views, cfg=aug, workers=workers, rank=rank,
            world_size=world_size, decode=decode_mode(decode, device), resume=resume,
        )  # fmt: skip
    if isinstance(source, FileSet):
        return StreamLoader(
            source, batch_size, seed, device, views=views, cfg=aug, workers=workers, rank=rank,
            world_size=world_size, bad=source.bad, resume=resume,
        )  # fmt: skip
    if getattr(source, "mapped", None) is not None:
        shape = tuple(source.images.shape)
        return MappedLoader(
            source.mapped, shape, batch_size, seed, device, workers=workers, rank=rank, world_size=world_size,
            resume=resume,
        )  # fmt: skip
    rows = source.tokens if hasattr(source, "tokens") else source.images
    return InMemoryLoader(rows, batch_size, seed, device, rank=rank, world_size=world_size)
