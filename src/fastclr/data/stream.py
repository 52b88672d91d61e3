"""Pretraining on images larger than the training size: decode and crop on CPU workers.

The split of the augmentation (Chen et al. 2020, Appendix A): CPU workers decode each file at full
resolution and apply the geometric part (random resized crop + horizontal flip) with PIL, so only
S x S uint8 views travel to the device; the device then applies the pixel part (colour distortion,
grayscale, blur) in batches with ``augment.apply_pixel_ops``. Both halves take their numbers from
``augment.sample_params`` keyed on (seed, epoch, sample index, view), exactly as the in-memory path
does, so a sample's views do not depend on the worker count, the batch or the process count.
The crop is resized with PIL's antialiased bilinear filter (torchvision's RandomResizedCrop on
PIL images); the in-memory path resamples the same box with the same filter on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastclr.data.images import BadImage, open_rgb
from fastclr.data.order import batch_index, epoch_order
from fastclr.data.sets import FileSet
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig, apply_pixel_ops, normalize, sample_params, to_float


def crop_views(
    images: list[Image.Image], index: torch.Tensor, *, seed: int, epoch: int, views: int, cfg: AugmentConfig
) -> torch.Tensor:
    """The geometric part of every view: random resized crop + flip, on the CPU with PIL.

    Args:
        images: b RGB images of any sizes (sample ``index[i]`` is ``images[i]``).
        index: int64 [b] global sample indices.
    Returns:
        uint8 [views, b, 3, S, S], S = cfg.size.
    """
    h = torch.tensor([im.height for im in images], dtype=torch.float32)
    w = torch.tensor([im.width for im in images], dtype=torch.float32)
    s = cfg.size
    out = np.empty((views, len(images), s, s, 3), dtype=np.uint8)
    for v in range(views):
        p = sample_params(index, h, w, seed=seed, epoch=epoch, view=v, cfg=cfg)
        box = torch.stack((p["left"], p["top"], p["left"] + p["crop_w"], p["top"] + p["crop_h"]), 1).long().tolist()
        for i, im in enumerate(images):
            view = im.crop(tuple(box[i])).resize(
                (s, s), Image.Resampling.BILINEAR
            )  # torchvision's resized_crop on PIL images
            if p["flip"][i]:
                view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            out[v, i] = np.asarray(view)
    return torch.from_numpy(out).permute(0, 1, 4, 2, 3).contiguous()


def finish_views(
    views: torch.Tensor, index: torch.Tensor, *, seed: int, epoch: int, cfg: AugmentConfig
) -> torch.Tensor:
    """The pixel part on the device: uint8 [V, b, 3, S, S] -> normalised float32 [V*b, 3, S, S] (view-major).

    The colour, grayscale and blur numbers do not depend on the image size, so the keyed draws
    equal those of ``crop_views`` (and of ``augment.augment``) for the same (seed, epoch, index, view).
    """
    index = index.to(views.device)
    one = torch.ones(index.shape[0], device=views.device)
    out = []
    for v in range(views.shape[0]):
        p = sample_params(index, one, one, seed=seed, epoch=epoch, view=v, cfg=cfg)
        out.append(normalize(apply_pixel_ops(to_float(views[v]), p, cfg)))
    return torch.cat(out)


class _Order(torch.utils.data.Sampler):
    """Yields (epoch, batch) keys for the epoch and start step set before each pass."""

    def __init__(self, steps: int):
        self.steps, self.epoch, self.start = steps, 0, 0

    def __iter__(self):
        return iter([(self.epoch, b) for b in range(self.start, self.steps)])

    def __len__(self) -> int:
        return self.steps - self.start


class _Batches(torch.utils.data.Dataset):
    """Batch (epoch, b) -> (index [b], views uint8 [V, b, 3, S, S]); runs in the CPU workers."""

    def __init__(
        self, files: list[Path], batch_size: int, seed: int, views: int, cfg: AugmentConfig, rank: int, world_size: int
    ):
        self.files, self.batch_size, self.seed, self.views, self.cfg = files, batch_size, seed, views, cfg
        self.rank, self.world_size = rank, world_size
        self._perm: tuple[int, torch.Tensor] | None = None

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, b = key
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_order(len(self.files), self.seed, epoch))
        index = batch_index(self._perm[1], b, self.batch_size, self.rank, self.world_size)
        images = []
        for i in index.tolist():
            try:
                images.append(open_rgb(self.files[i])[0])
            except BadImage as e:
                raise UserError(
                    f"{e.path} could not be decoded during training ({e.reason}); it changed since the scan"
                ) from None
        return index, crop_views(images, index, seed=self.seed, epoch=epoch, views=self.views, cfg=self.cfg)


class StreamLoader:
    """Yields (index [b], views uint8 [V, b, 3, S, S]) on ``device``; b = batch_size / world_size.

    Same order and batching as ``loader.InMemoryLoader``; ``workers`` CPU processes decode and crop
    (0: this process), a few batches ahead of the device.
    """

    def __init__(
        self,
        data: FileSet,
        batch_size: int,
        seed: int,
        device: torch.device,
        *,
        views: int,
        cfg: AugmentConfig,
        workers: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch_size, self.device = len(data), batch_size, device
        self.sampler = _Order(len(self))
        self.batches = _Batches(data.files, batch_size, seed, views, cfg, rank, world_size)
        self.loader = torch.utils.data.DataLoader(
            self.batches,
            batch_size=None,
            sampler=self.sampler,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.n // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches of ``epoch`` from step ``start`` on (for resuming mid-epoch)."""
        self.sampler.epoch, self.sampler.start = epoch, start
        for index, views in self.loader:
            yield index.to(self.device, non_blocking=True), views.to(self.device, non_blocking=True)
