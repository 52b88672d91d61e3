"""SimCLR's batched, keyed augmentation for your own training loop (Chen et al. 2020, Appendix A).

:class:`Augment` wraps :func:`fastclr.method.augment.augment`, the function pretraining uses: a
random resized crop and flip, colour distortion of strength s with p = 0.8, grayscale with p = 0.2
and optional blur, on a whole uint8 batch on any device. Every random number is keyed on
(seed, epoch, sample index, view) (:mod:`fastclr.method.rng`), so ``Augment.from_config(cfg)``
gives exactly the views a ``fastclr pretrain`` run with ``cfg`` trains on.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fastclr.config import Config, build_config
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig, augment
from fastclr.train.step import augment_config


class Augment:
    """Random SimCLR views of uint8 image batches: ``aug.views(images, index, epoch=e)``.

    The defaults are the paper's CIFAR-10 setting (Appendix B.9): crop area 0.08-1, flip, colour
    strength s = 0.5, no blur. For ImageNet-size images use ``color_strength=1.0, blur=True``
    (Appendix A), or take a preset's values with :meth:`from_config`.

    Args:
        size: side S of the views in pixels.
        min_scale: smallest crop area fraction (paper: 0.08).
        color_strength: s, the colour distortion strength (1.0 ImageNet, 0.5 CIFAR).
        blur: Gaussian blur with p = 0.5 (ImageNet-size images).
        flip: horizontal flip with p = 0.5 (off for digits and text).
        seed: selects the random stream; the same (seed, epoch, index, view) gives the same view.
    """

    def __init__(
        self,
        size: int = 32,
        *,
        min_scale: float = 0.08,
        color_strength: float = 0.5,
        blur: bool = False,
        flip: bool = True,
        seed: int = 0,
    ):
        self.config = AugmentConfig(size=size, min_scale=min_scale, flip=flip, color_strength=color_strength, blur=blur)
        self.seed = seed

    @classmethod
    def from_config(cls, config: Config | str | Path) -> Augment:
        """The augmentation a pretraining run uses: from a :class:`fastclr.Config`, a preset name or a YAML file."""
        cfg = config if isinstance(config, Config) else build_config(str(config), {}, [])
        aug = augment_config(cfg)
        if not isinstance(aug, AugmentConfig):
            raise UserError(
                f"arch={cfg.arch}: a text run; its views are fastclr.method.text_views, not image augmentations"
            )
        return cls(
            aug.size,
            min_scale=aug.min_scale,
            color_strength=aug.color_strength,
            blur=aug.blur,
            flip=aug.flip,
            seed=cfg.seed,
        )

    def __repr__(self) -> str:
        c = self.config
        return (
            f"Augment(size={c.size}, min_scale={c.min_scale}, color_strength={c.color_strength}, "
            f"blur={c.blur}, flip={c.flip}, seed={self.seed})"
        )

    def __call__(
        self, images: torch.Tensor, index: torch.Tensor | None = None, *, epoch: int = 0, view: int = 0
    ) -> torch.Tensor:
        """One view of each image: uint8 [N, C, H, W] (C = 1 or 3) -> normalised float32 [N, 3, S, S].

        Args:
            images: the batch, on any device (the view is computed there).
            index: int64 [N], each image's index in your data set (default 0 .. N-1). Pass the real
                indices and the epoch: they key the random draws, so each epoch sees new views.
            epoch: the epoch (a new draw per epoch).
            view: which view (0, 1, ...): different views of one image are independent draws.
        """
        if index is None:
            index = torch.arange(images.shape[0], device=images.device)
        return augment(images, index, seed=self.seed, epoch=epoch, view=view, cfg=self.config)

    def views(
        self, images: torch.Tensor, index: torch.Tensor | None = None, *, epoch: int = 0, count: int = 2
    ) -> torch.Tensor:
        """``count`` views of each image, view-major as pretraining stacks them: float32 [count*N, 3, S, S].

        Rows v*N .. (v+1)*N - 1 are view v, so ``z.chunk(count)`` gives the views' projections for
        :func:`fastclr.nt_xent`.
        """
        return torch.cat([self(images, index, epoch=epoch, view=v) for v in range(count)])
