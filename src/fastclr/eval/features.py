"""Representations h of a whole data set, computed once, in dataset order."""

from __future__ import annotations

from collections.abc import Callable

import torch

from fastclr.method.augment import eval_view
from fastclr.train.precision import autocast


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
        float32 [N, d] on the CPU, row i for image i.
    """
    out = []
    for lo in range(0, images.shape[0], batch_size):
        x = eval_view(images[lo : lo + batch_size].to(device, non_blocking=True), size)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            h = fn(x)
        out.append(h.float().cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)
