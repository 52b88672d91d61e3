"""The data layer's contract with training: a :class:`Loader` yields :class:`Batch` es, and each batch
finishes its own views.

The loaders (``memory.py``, ``mapped.py``, ``files.py``, ``shards.py``) read one keyed order
(``order.py``) and differ in how much of the augmentation their workers have done, which the batch's
type says:

- :class:`RawImages` uint8 [b, 3, H, W]: decoded images (held in memory, or a mapped cache); the device
  draws every view.
- :class:`CroppedViews` uint8 [V, b, 3, S, S]: CPU workers (or the GPU's JPEG decoder) cut the random
  resized crops and flips; the device adds the pixel ops (colour, grayscale, blur).
- :class:`FinishedViews` float32 [V*b, 3, S, S]: CPU workers did all of it (the device is the CPU).
- :class:`Tokens` int64 [b, 2, L]: a text set's token ids and word numbers; word-level views.

Every batch carries ``index`` int64 [b], the samples' numbers in the data set. They key every random
draw (``method/rng.py``), so a sample's views are the same whichever loader, worker or process made them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch

from fastclr.errors import UserError
from fastclr.method import augment
from fastclr.method.augment import AugmentConfig
from fastclr.method.text_views import TextViewConfig, make_text_views


@dataclass(frozen=True)
class ViewRecipe:
    """How a step's views are drawn, fixed for a run: ``views`` full-size views per sample with ``aug``
    (image augmentation or text views), multi-crop's ``small_crops`` more with ``small`` (None: off),
    keyed on ``seed``; image views in channels_last layout when asked."""

    seed: int
    views: int
    aug: AugmentConfig | TextViewConfig
    small_crops: int = 0
    small: AugmentConfig | None = None
    channels_last: bool = False

    @property
    def image(self) -> AugmentConfig:
        if not isinstance(self.aug, AugmentConfig):
            raise TypeError("image views need an AugmentConfig, this recipe draws text views")
        return self.aug


@dataclass(frozen=True)
class Batch(ABC):
    """One process's share of one global batch: ``index`` int64 [b] and the ``rows`` its type describes."""

    index: torch.Tensor
    rows: torch.Tensor

    def __len__(self) -> int:
        return self.index.shape[0]

    @abstractmethod
    def views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor:
        """All ``recipe.views`` views, view-major: rows v*b .. (v+1)*b - 1 are view v."""

    def small_views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor | None:
        """Multi-crop's small views, view-major [small_crops*b, 3, s, s], or None when off. Only a batch of
        whole images can still be cropped small; the others stop with the way out."""
        if not recipe.small_crops:
            return None
        raise UserError(
            f"small_crops={recipe.small_crops} needs images held in memory, but these are cropped by loader workers "
            "(images larger than image_size, shards, or over data_memory_gb): set small_crops=0, or decode them once "
            f"with `fastclr prepare DATA --size {recipe.image.size} --out DIR` and train on --data prepared:DIR"
        )


def _layout(x: torch.Tensor, recipe: ViewRecipe) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if recipe.channels_last else x


class RawImages(Batch):
    """uint8 [b, 3, H, W] decoded images: every view is drawn here (``augment.views``)."""

    def views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor:
        x = augment.views(self.rows, self.index, seed=recipe.seed, epoch=epoch, first=0, count=recipe.views,
                          cfg=recipe.image)  # fmt: skip
        return _layout(x, recipe)

    def small_views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor | None:
        """Keyed on view numbers ``views`` .. ``views + small_crops - 1``, after the full-size views, so a
        sample's small views do not depend on the batch, worker or process count either."""
        if not recipe.small_crops or recipe.small is None:
            return None
        first, count = recipe.views, recipe.small_crops
        return augment.views(self.rows, self.index, seed=recipe.seed, epoch=epoch, first=first, count=count,
                             cfg=recipe.small)  # fmt: skip


def finish_views(
    crops: torch.Tensor, index: torch.Tensor, *, seed: int, epoch: int, cfg: AugmentConfig
) -> torch.Tensor:
    """The pixel part of cropped views: uint8 [V, b, 3, S, S] -> normalised float32 [V*b, 3, S, S] (view-major).

    The colour, grayscale and blur numbers do not depend on the image size, so the keyed draws equal
    those of the crops (``files.crop_views``) and of ``augment.augment`` for the same (seed, epoch, index, view).
    """
    index = index.to(crops.device)
    one = torch.ones(index.shape[0], device=crops.device)
    out = []
    for v in range(crops.shape[0]):
        p = augment.sample_params(index, one, one, seed=seed, epoch=epoch, view=v, cfg=cfg)
        out.append(augment.normalize(augment.apply_pixel_ops(augment.to_float(crops[v]), p, cfg)))
    return torch.cat(out)


class CroppedViews(Batch):
    """uint8 [V, b, 3, S, S]: crops and flips cut by the loader; the pixel ops run here (:func:`finish_views`)."""

    def views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor:
        return _layout(finish_views(self.rows, self.index, seed=recipe.seed, epoch=epoch, cfg=recipe.image), recipe)


class FinishedViews(Batch):
    """float32 [V*b, 3, S, S]: views the loader's CPU workers finished; nothing is left to do."""

    def views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor:
        return _layout(self.rows, recipe)


class Tokens(Batch):
    """int64 [b, 2, L] token ids and word numbers of a text set: word-level views (``method/text_views.py``)."""

    def views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor:
        if not isinstance(recipe.aug, TextViewConfig):
            raise TypeError("a batch of tokens needs a recipe of text views")
        return make_text_views(self.rows, self.index, recipe.seed, epoch, recipe.views, recipe.aug)

    def small_views(self, recipe: ViewRecipe, epoch: int) -> torch.Tensor | None:
        return None  # multi-crop is an image augmentation


class Loader(Protocol):
    """What every pretraining loader is (in memory, mapped, files, shards): its steps per epoch, and the
    epoch's batches from a step on (resume is exact at step granularity)."""

    def __len__(self) -> int: ...

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]: ...
