"""Representations h of a whole data set, computed once, in dataset order, kept on the device.

Evaluation (kNN, the linear probe) then runs where the features are: on a GPU the whole
protocol stays there, and nothing is copied back until a figure is read.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

import torch

from fastclr.method.augment import eval_view
from fastclr.train.precision import autocast


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device`` without blocking the host: a CPU batch bound for CUDA goes through pinned memory."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device, non_blocking=True)


@torch.no_grad()
def extract(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    size: int,
    device: torch.device,
    batch_size: int = 512,
    precision: str = "fp32",
    channels_last: bool = False,
) -> torch.Tensor:
    """Apply ``fn`` (e.g. ``model.encode``) to the evaluation view of every image.

    Args:
        images: uint8 [N, 3, H, W] on any device.
        size: side of the evaluation view (resize + centre crop, no random augmentation).
    Returns:
        float32 [N, d] on ``device``, row i for image i.
    """
    out = []
    for lo in range(0, images.shape[0], batch_size):
        x = eval_view(to_device(images[lo : lo + batch_size], device), size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            h = fn(x)
        out.append(h.float())
    return torch.cat(out) if out else torch.zeros(0, 0, device=device)


def cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def all_threads() -> Iterator[int]:
    """Use every core for the block, then restore the thread count; yields the count used.

    torchrun sets OMP_NUM_THREADS=1 so that its processes do not fight over the cores. Once
    training is over only rank 0 is left, evaluating alone: it may use them all.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(max(before, cores()))
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)
