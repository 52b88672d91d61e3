"""An encoder's input, made exactly as evaluation makes it, from PIL images, files or uint8 tensors.

Evaluation (kNN, the linear probe, ``fastclr embed``) sees the deterministic view of
:func:`fastclr.method.augment.eval_view` (the resize and centre crop of the linear evaluation): a
file is decoded upright to RGB by
:func:`fastclr.data.images.decode` (short side resized to S with PIL's bicubic filter, centre crop:
what a folder data set holds), then scaled to [0, 1] and normalised with the ImageNet mean and std.
A uint8 tensor goes to :func:`~fastclr.method.augment.eval_view` directly, as the standard data
sets do. :class:`Preprocess` gives one entry point for all three, so an image embedded from a
notebook gets the same input as the same file in a data set.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from fastclr.data import images as image_files
from fastclr.method.augment import eval_view

PixelSource = Image.Image | str | Path  # one image: a PIL image or an image file


class Preprocess:
    """Turns images into an encoder's input: float32 [N, 3, S, S], normalised, as evaluation does.

    Args:
        image_size: S, the side the encoder was trained at (``encoder.image_size``).

    Example:
        ``x = encoder.preprocess([Image.open("cat.jpg")])`` then ``h = encoder(x)``.
    """

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def __repr__(self) -> str:
        return f"Preprocess(image_size={self.image_size})"

    def pixels(self, images: PixelSource | Sequence[PixelSource]) -> torch.Tensor:
        """The decoded evaluation pixels before normalisation: uint8 [N, 3, S, S].

        A file goes through :func:`fastclr.data.images.decode` (as a folder data set); a PIL image
        through the same policy (EXIF orientation, RGB conversion, bicubic short-side resize,
        centre crop). Raises :class:`fastclr.data.images.BadImage` for a file that cannot be read.
        """
        items = [images] if isinstance(images, (Image.Image, str, Path)) else list(images)
        if not items:
            return torch.zeros(0, 3, self.image_size, self.image_size, dtype=torch.uint8)
        # contiguous [N, C, H, W] as a data set stores them: the conv kernels, and so the rounding, follow the layout
        return torch.from_numpy(np.stack([self._one(item) for item in items])).contiguous()

    def _one(self, item: PixelSource) -> np.ndarray:
        if isinstance(item, Image.Image):
            upright = ImageOps.exif_transpose(item) or item
            return image_files.fit(image_files.to_rgb(upright), self.image_size)
        return image_files.decode(item, self.image_size)[0]

    def __call__(self, images: torch.Tensor | PixelSource | Sequence[PixelSource]) -> torch.Tensor:
        """The encoder's input: float32 [N, 3, S, S], on the tensor's device (the CPU for files and PIL images).

        Args:
            images: a uint8 tensor [N, C, H, W] or [C, H, W] (C = 1 or 3; float in [0, 1] also
                accepted), one PIL image or file path, or a sequence of them.
        """
        if isinstance(images, torch.Tensor):
            batch = images.unsqueeze(0) if images.dim() == 3 else images
            return eval_view(batch, self.image_size)
        return eval_view(self.pixels(images), self.image_size)
