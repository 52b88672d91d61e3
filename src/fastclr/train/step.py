"""One SimCLR optimisation step: views, forward, loss, backward, update.

The step never synchronises with the host: constants reach the device once, counts come from
shapes, and it returns the loss as a device tensor that the loop reads only every ``log_every``
steps. tests/train/test_sync_free.py runs it under a dispatch mode that fails on any host sync.

Multi-crop (Caron et al. 2020, SwAV section 3.2): ``small_crops`` extra low-resolution views per
image (``ViewRecipe.small``, drawn by the batch: ``data/loaders/base.py``). Views of two sizes cannot
share a tensor, so the encoder runs once per size group and the projections are concatenated
view-major, all full-size views then all small ones, before the loss: every other view of an image,
small or full, is a positive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F

from fastclr import config
from fastclr.data.loaders.base import ViewRecipe
from fastclr.method import loss
from fastclr.method.augment import AugmentConfig, small_view_config, small_view_size
from fastclr.method.rng import keyed_uniform
from fastclr.method.text_views import TextViewConfig
from fastclr.train import dist, gradcache
from fastclr.train.precision import autocast

_NEGATIVES_STREAM = 0x4E45  # keyed_uniform "view" slot of the max_negatives draws


def augment_config(cfg: config.Config) -> AugmentConfig | TextViewConfig:
    """The view settings: image augmentations, or the text views of :mod:`fastclr.method.text_views`."""
    if config.is_text(cfg):
        return TextViewConfig(cfg.word_delete, cfg.span_crop, cfg.word_reorder)
    return AugmentConfig(
        size=cfg.image_size, min_scale=cfg.min_scale, flip=cfg.flip, color_strength=cfg.color_strength, blur=cfg.blur
    )


def view_recipe(cfg: config.Config) -> ViewRecipe:
    """How this run's batches draw their views (``data/loaders/base.py``): ``views`` full-size ones with
    :func:`augment_config`, multi-crop's ``small_crops`` with :func:`small_augment_config`, in the
    channels_last layout when ``channels_last`` is set."""
    aug = augment_config(cfg)
    small = small_augment_config(cfg, aug) if cfg.small_crops and isinstance(aug, AugmentConfig) else None
    return ViewRecipe(cfg.seed, cfg.views, aug, cfg.small_crops, small, cfg.channels_last)


def view_count(cfg: config.Config) -> int:
    """Views per image that the loss sees: the full-size ``views`` plus multi-crop's ``small_crops``."""
    return cfg.views + cfg.small_crops


def small_augment_config(cfg: config.Config, aug: AugmentConfig) -> AugmentConfig:
    """The small views' settings: ``aug`` at ``small_crop_size`` with the small crop-area range."""
    size = small_view_size(cfg.image_size, cfg.small_crop_size)
    return small_view_config(aug, size, cfg.small_crop_min_scale, cfg.small_crop_max_scale)


LossFn = Callable[[torch.Tensor, int], torch.Tensor]  # (z [V*b, D] view-major, step) -> scalar


@dataclass(frozen=True)
class Objective:
    """What a step optimises, built once from the config (:func:`objective`): the loss of the projections
    and the layout of the views it is given. The step itself reads no config."""

    loss: LossFn
    views: int  # full-size views per image
    small_crops: int  # multi-crop's small views per image (0: off)
    chunk_size: int  # gradient cache: views forwarded at a time (0: the whole batch)
    seed: int  # keys the gradient cache's chunk order


def objective(cfg: config.Config) -> Objective:
    """The run's :class:`Objective`, with its loss chosen once (:func:`build_loss`)."""
    return Objective(build_loss(cfg), cfg.views, cfg.small_crops, cfg.chunk_size, cfg.seed)


def build_loss(cfg: config.Config) -> LossFn:
    """The configured loss of this rank's anchors against the global batch (paper section 2.1, eq. 1;
    docs/distributed.md), chosen once: ``loss(z, step)``.

    z: [V*b, D] this rank's projections, view-major (row v*b + i is view v of local sample i);
    V = :func:`view_count`, the full-size views first, then multi-crop's small ones. The loss is the
    mean over this rank's V*b anchors; its mean over ranks is the single-process loss on the global
    batch: the candidates are every rank's rows, put back in the single-process order (view-major over
    the global batch B = k*b); sample ids and each anchor's self position are global. Memory is
    (V*b) x (V*B), never (V*B)^2.
    """
    v, cap, seed = view_count(cfg), cfg.max_negatives or None, cfg.seed
    terms: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor] = {
        "nt_xent": partial(loss.nt_xent_terms, temperature=cfg.temperature),
        "nt_logistic": partial(loss.nt_logistic_terms, temperature=cfg.temperature),
        "margin_triplet": partial(loss.margin_triplet_terms, margin=cfg.margin, slots=v - 1),  # no sync
    }[cfg.loss]

    def contrastive(z: torch.Tensor, step: int) -> torch.Tensor:
        k, r = dist.world_size(), dist.rank()
        b = z.shape[0] // v
        zn = F.normalize(z.float(), dim=1)  # [V*b, D], float32 as the losses require
        cand = dist.gather(zn).view(k, v, b, -1).transpose(0, 1).reshape(v * k * b, -1)  # [V*B, D], view-major
        local = torch.arange(b, device=z.device) + r * b  # global sample ids of this rank's samples
        anchor_sample = local.repeat(v)  # [V*b]
        anchor_pos = (torch.arange(v, device=z.device)[:, None] * (k * b) + local[None, :]).reshape(-1)  # in cand
        cand_sample = torch.arange(k * b, device=z.device).repeat(v)  # [V*B]
        scores = keyed_uniform(seed, step, anchor_pos, _NEGATIVES_STREAM, cand.shape[0]) if cap else None
        sim, pos, neg = loss.contrastive_terms(zn, anchor_sample, anchor_pos, cand, cand_sample, cap, scores=scores)
        return terms(sim, pos, neg).mean()

    return contrastive


def contrastive_loss(z: torch.Tensor, cfg: config.Config, step: int) -> torch.Tensor:
    """One evaluation of the configured loss (:func:`build_loss`); a run builds its loss once instead."""
    return build_loss(cfg)(z, step)


def global_rows(b: int, views: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 [V*b]: the row of each of this rank's views in the single-process view-major batch."""
    k, r = dist.world_size(), dist.rank()
    v = torch.arange(views, device=device)[:, None]
    return (v * k * b + r * b + torch.arange(b, device=device)[None, :]).reshape(-1)


def forward_backward(
    model,
    x: torch.Tensor,
    obj: Objective,
    step: int,
    device,
    precision: str,
    on_h=None,
    small: torch.Tensor | None = None,
) -> torch.Tensor:
    """Loss and gradients (in ``.grad``) of one step on this rank's views x [V*b, 3, S, S].

    ``small`` [small_crops*b, 3, s, s]: multi-crop's small views (``Batch.small_views``), or None.
    The encoder runs once on x and once on them (BN statistics per size group, as SwAV) and the
    loss sees their projections concatenated view-major, x's first.
    With ``obj.chunk_size`` > 0 the gradient cache of :mod:`fastclr.train.gradcache` computes the same
    gradients with activations for ``chunk_size`` views at a time, the chunks a keyed random
    permutation of the global batch's views of each size (:func:`fastclr.train.gradcache.chunk_order`).
    Under DDP the gradients are averaged over ranks, which with :func:`fastclr.train.dist.gather` gives
    the single-process gradient. Returns the global mean loss as a detached device tensor (no host sync).
    ``on_h(h)``, if given, receives the detached representations [V*b, d] of the full-size views x (the
    online probe of :mod:`fastclr.eval.monitor`; with the gradient cache, those of its first,
    gradient-free pass).
    """
    if (small is None) != (obj.small_crops == 0):  # shapes only: no host sync
        raise ValueError(f"small_crops={obj.small_crops} but small views {'missing' if small is None else 'given'}")
    groups = [x] if small is None else [x, small.contiguous(memory_format=_memory_format(x))]
    if obj.chunk_size:
        rows = global_rows(x.shape[0] // obj.views, obj.views + obj.small_crops, x.device)
        value = gradcache.forward_backward(
            model,
            groups,
            lambda z: obj.loss(z, step),
            obj.chunk_size,
            lambda: autocast(device, precision),
            on_h,
            [gradcache.chunk_order(obj.seed, step, r) for r in rows.split([g.shape[0] for g in groups])],
        )
    else:
        with autocast(device, precision):
            hz = [model(g) for g in groups]  # one pass per view size
        if on_h is not None:
            on_h(hz[0][0].detach())
        value = obj.loss(torch.cat([z for _, z in hz]), step)
        value.backward()
    return dist.mean(value.detach())


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    """channels_last where x has it (the small views follow the full-size ones), else contiguous."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def train_step(
    model,
    optimizer,
    x: torch.Tensor,
    obj: Objective,
    step: int,
    device,
    precision: str,
    on_h=None,
    small: torch.Tensor | None = None,
) -> torch.Tensor:
    """One optimisation step on views x [V*b, 3, S, S] and multi-crop's ``small`` views (or None);
    returns the loss as a device tensor (no sync)."""
    optimizer.zero_grad(set_to_none=True)
    value = forward_backward(model, x, obj, step, device, precision, on_h, small)
    optimizer.step()
    return value
