"""Where pretraining reads its images from: three tiers, picked from the data and a memory budget.

(a) ``memory``: the decoded set (N x 3 x S x S bytes) fits the budget: it is held on the training
    device and cropped there in batches (``memory.InMemoryLoader``), the fastest path. Folders of
    images no larger than S are decoded once at the start (workers); standard sets and small
    prepared caches are already decoded.
(b) ``mapped``: a prepared cache (``write/prepare.py``) larger than the budget: memory-mapped and read per
    batch by loader workers (``mapped.py``); the OS page cache shares its pages between ranks and
    workers, so no process holds a copy.
(c) ``files``: images larger than S, or too many to decode into the budget: loader workers decode
    each file and cut the random crops with the keyed draws (``files.py``); colour ops run on
    the device in batches.

The budget is ``data_memory_gb`` (config), or by default a quarter of the machine's RAM and, when
training on a GPU, a quarter of its memory as well. Peak memory then does not grow with the
number of images beyond the listing itself (a few bytes per file path, ``sources/listing.py``).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from fastclr.data.loaders.base import Loader, Tokens
from fastclr.data.loaders.workers import worker_cap
from fastclr.data.sets import FileSet, ImageSet
from fastclr.method.augment import AugmentConfig
from fastclr.method.text_views import TextViewConfig

if TYPE_CHECKING:
    from fastclr.data.sources.shards import ShardSet
    from fastclr.data.text import TextSet

GB = 1024**3
MEMORY, MAPPED, FILES = "memory", "mapped", "files"


def ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return 8 * GB


def budget(data_memory_gb: float = 0.0, device: torch.device | None = None) -> int:
    """The bytes of decoded images a run may hold: the setting, else a quarter of RAM (and of the GPU's memory)."""
    if data_memory_gb > 0:
        return int(data_memory_gb * GB)
    limit = ram_bytes() // 4
    if device is not None and device.type == "cuda":
        limit = min(limit, torch.cuda.get_device_properties(device).total_memory // 4)
    return limit


def decoded_bytes(count: int, size: int) -> int:
    """Bytes of ``count`` decoded uint8 images of 3 x size x size."""
    return count * 3 * size * size


def folder_tier(count: int, size: int, median_side: float, limit: int) -> str:
    """``memory`` for images no larger than the training size that fit the budget, else ``files``."""
    return MEMORY if median_side <= size and decoded_bytes(count, size) <= limit else FILES


def describe(tier: str, count: int, size: int, limit: int, workers: int) -> str:
    """The log line stating the tier and why (with the loader workers that will run: at most the cores)."""
    need = decoded_bytes(count, size) / GB
    workers = worker_cap(workers)
    why = {
        MEMORY: f"decoded {need:.2f} GB fits the {limit / GB:.1f} GB budget: held on the training device",
        MAPPED: f"the {need:.2f} GB cache exceeds the {limit / GB:.1f} GB budget: memory-mapped, read per batch by "
        f"{workers} loader workers",
        FILES: f"decoded and cropped from the files by {workers} loader workers (images larger than {size} px, or "
        f"{need:.2f} GB decoded over the {limit / GB:.1f} GB budget)",
    }[tier]
    return f"data: {count} images at {size} px, tier {tier}: {why}; set the budget with --set data_memory_gb=G"


def build_loader(
    source: ImageSet | FileSet | ShardSet | TextSet,
    batch_size: int,
    seed: int,
    device: torch.device,
    *,
    views: int,
    aug: AugmentConfig | TextViewConfig,
    workers: int = 0,
    rank: int = 0,
    world_size: int = 1,
    resume: str = "",
    decode: str = "cpu",
) -> Loader:
    """The loader for a pretraining source, by tier: ``memory.InMemoryLoader`` for a decoded ImageSet
    (images on the device) or a text set (its token tensors, :mod:`fastclr.data.text`),
    ``mapped.MappedLoader`` for a cache over the memory budget, ``files.FileLoader`` for a FileSet
    (decoded and cropped by ``workers`` CPU processes), ``shards.ShardLoader`` for a ShardSet, its JPEGs
    decoded where ``decode`` (``gpu_decode.decode_mode``) says. ``resume`` is the command named when a
    loader worker dies."""
    from fastclr.data.loaders.files import FileLoader
    from fastclr.data.loaders.mapped import MappedLoader
    from fastclr.data.loaders.memory import InMemoryLoader
    from fastclr.data.sources.shards import ShardSet

    workers = worker_cap(workers)  # more processes than cores only add contention
    if isinstance(source, (ShardSet, FileSet)):  # read by loader workers, which cut the crops
        if not isinstance(aug, AugmentConfig):
            raise TypeError("images read by loader workers need an AugmentConfig")
        if isinstance(source, ShardSet):
            from fastclr.data.loaders.gpu_decode import decode_mode
            from fastclr.data.loaders.shards import ShardLoader

            return ShardLoader(
                source, batch_size, seed, device, views=views, cfg=aug, workers=workers, rank=rank,
                world_size=world_size, decode=decode_mode(decode, device), resume=resume,
            )  # fmt: skip
        return FileLoader(
            source, batch_size, seed, device, views=views, cfg=aug, workers=workers, rank=rank,
            world_size=world_size, bad=source.bad, resume=resume,
        )  # fmt: skip
    if isinstance(source, ImageSet) and source.mapped is not None:
        return MappedLoader(
            source.mapped, tuple(source.images.shape), batch_size, seed, device, workers=workers, rank=rank,
            world_size=world_size, resume=resume,
        )  # fmt: skip
    if isinstance(source, ImageSet):
        return InMemoryLoader(source.images, batch_size, seed, device, rank=rank, world_size=world_size)
    return InMemoryLoader(source.tokens, batch_size, seed, device, rank=rank, world_size=world_size, batch=Tokens)
