"""Pretraining on images larger than the training size: decode and crop on CPU workers.

The split of the augmentation (Chen et al. 2020, Appendix A): CPU workers decode each file at full
resolution and apply the geometric part (random resized crop + horizontal flip) with PIL, so only
S x S uint8 views travel to the device; the device then applies the pixel part (colour distortion,
grayscale, blur) in batches with ``augment.apply_pixel_ops``. Both halves take their numbers from
``augment.sample_params`` keyed on (seed, epoch, sample index, view), exactly as the in-memory path
does, so a sample's views do not depend on the worker count, the batch or the process count.
The crop is resized with PIL's antialiased bilinear filter (torchvision's RandomResizedCrop on
PIL images); the in-memory path resamples the same box with the same filter on the device. A JPEG is
decoded at the reduced scale (libjpeg's DCT scaling) whose sides stay at least
``augment.crop_source_side`` (392 px for 96-px views), so even the smallest crop keeps every pixel it is
resized to: a 4000 x 3000 photo then decodes at 1000 x 750, about 4 times faster.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastclr.data.badfiles import BadFiles
from fastclr.data.images import BadImage, open_rgb
from fastclr.data.loaders.base import Batch, CroppedViews, FinishedViews, finish_views
from fastclr.data.loaders.order import batch_index, epoch_order
from fastclr.data.loaders.workers import EpochSampler, epoch_loader, guarded
from fastclr.data.sets import FileSet
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig, crop_source_side, sample_params


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


MAX_REPLACEMENTS = 64  # files tried in a row before a batch gives up


def open_or_replace(
    files: Sequence[Path], i: int, bad: list[tuple[str, str]], draft: int = 0
) -> tuple[int, Image.Image]:
    """Sample ``i``'s image (a JPEG at the reduced scale whose sides stay >= ``draft``, 0: full size); a file
    that cannot be decoded is recorded in ``bad`` and replaced by the next readable file of the listing
    (i + 1, i + 2, ... wrapping), whose index then keys the draws."""
    for step in range(MAX_REPLACEMENTS):
        j = (i + step) % len(files)
        try:
            return j, open_rgb(files[j], draft=draft)[0]
        except BadImage as e:
            bad.append((e.path, e.reason))
    raise UserError(
        f"{MAX_REPLACEMENTS} files in a row from {files[i]} on could not be decoded; is the folder readable?"
    )


class _Batches(torch.utils.data.Dataset):
    """Batch (epoch, b) -> (index [b], views uint8 [V, b, 3, S, S] -- or, with ``finish``, float32
    [V*b, 3, S, S] after the pixel ops --, [(path, reason)] of the bad files met); runs in the CPU workers."""

    def __init__(
        self,
        files,
        batch_size: int,
        seed: int,
        views: int,
        cfg: AugmentConfig,
        rank: int,
        world_size: int,
        finish: bool = False,
    ):
        self.files, self.batch_size, self.seed, self.views, self.cfg = files, batch_size, seed, views, cfg
        self.rank, self.world_size, self.finish = rank, world_size, finish
        self.draft = crop_source_side(cfg)  # a 12-MP photo cut into 96-px views needs no more than 392 px a side
        self._perm: tuple[int, torch.Tensor] | None = None

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
        epoch, b = key
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, epoch_order(len(self.files), self.seed, epoch))
        index = batch_index(self._perm[1], b, self.batch_size, self.rank, self.world_size).clone()
        images: list[Image.Image] = []
        bad: list[tuple[str, str]] = []
        for k, i in enumerate(index.tolist()):
            index[k], image = open_or_replace(self.files, i, bad, self.draft)
            images.append(image)
        views = crop_views(images, index, seed=self.seed, epoch=epoch, views=self.views, cfg=self.cfg)
        if self.finish:  # the device is this CPU: the pixel ops run here, in parallel, not in the main process
            views = finish_views(views, index, seed=self.seed, epoch=epoch, cfg=self.cfg)
        return index, views, bad


class FileLoader:
    """Yields CroppedViews (index [b], uint8 [V, b, 3, S, S]) on ``device``; b = batch_size / world_size.

    Same order and batching as ``memory.InMemoryLoader``; ``workers`` CPU processes decode and crop
    (0: this process), a few batches ahead of the device. When the device is the CPU itself and there
    are workers, they apply the pixel ops too (same keyed draws, so the same views) and the loader
    yields FinishedViews, float32 [V*b, 3, S, S]: the main process is left to the model. Bad files met
    are reported to ``bad`` (``badfiles.py``: skipped.txt, the count, the max_bad_fraction stop); a
    worker's death ends the run with one line naming ``resume``, the command that continues it.
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
        bad: BadFiles | None = None,
        resume: str = "",
    ):
        if batch_size % world_size:
            raise ValueError(f"batch size {batch_size} is not divisible by {world_size} processes")
        self.n, self.batch_size, self.device = len(data), batch_size, device
        self.bad, self.resume = bad, resume
        self.sampler = EpochSampler(len(self))
        finish = device.type == "cpu" and workers > 0
        self.batches = _Batches(data.files, batch_size, seed, views, cfg, rank, world_size, finish)
        self.batch: type[Batch] = FinishedViews if finish else CroppedViews
        self.loader = epoch_loader(self.batches, self.sampler, workers, device.type == "cuda")

    def __len__(self) -> int:
        """Steps per epoch."""
        return self.n // self.batch_size

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        """Batches of ``epoch`` from step ``start`` on (for resuming mid-epoch)."""
        self.sampler.epoch, self.sampler.start = epoch, start
        for index, views, bad in guarded(self.loader, self.resume):
            if self.bad is not None:
                self.bad.met(index.shape[0] + len(bad), bad)
            yield self.batch(index.to(self.device, non_blocking=True), views.to(self.device, non_blocking=True))
