"""One SimCLR optimisation step: views, forward, loss, backward, update.

The step never synchronises with the host: constants reach the device once, counts come from
shapes, and it returns the loss as a device tensor that the loop reads only every ``log_every``
steps. tests/train/test_sync_free.py runs it under a dispatch mode that fails on any host sync.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fastclr import config
from fastclr.data.stream import finish_views
from fastclr.method import loss
from fastclr.method.augment import AugmentConfig, augment
from fastclr.method.rng import keyed_uniform
from fastclr.text.views import TextViewConfig, make_text_views
from fastclr.train import dist, gradcache
from fastclr.train.precision import autocast

_NEGATIVES_STREAM = 0x4E45  # keyed_uniform "view" slot of the max_negatives draws


def augment_config(cfg: config.Config) -> AugmentConfig | TextViewConfig:
    """The view settings: image augmentations, or the text views of :mod:`fastclr.text.views`."""
    if config.is_text(cfg):
        return TextViewConfig(cfg.word_delete, cfg.span_crop, cfg.word_reorder)
    return AugmentConfig(
        size=cfg.image_size, min_scale=cfg.min_scale, flip=cfg.flip, color_strength=cfg.color_strength, blur=cfg.blur
    )


def make_views(
    images: torch.Tensor, index: torch.Tensor, epoch: int, cfg: config.Config, aug: AugmentConfig | TextViewConfig
) -> torch.Tensor:
    """All V views of a batch, view-major: rows v*b .. (v+1)*b - 1 are view v. [V*b, 3, S, S].

    ``images`` is uint8 [b, 3, H, W] (in-memory path), or [V, b, 3, S, S]: views already cropped by
    the CPU workers of the large-image path (stream.py), which only need the pixel ops here, or
    float [V*b, 3, S, S]: views those workers finished too (when the device is the CPU). Text:
    token tensors [b, 2, L] -> token ids [V*b, L] (:func:`fastclr.text.views.make_text_views`).
    """
    if isinstance(aug, TextViewConfig):
        return make_text_views(images, index, cfg.seed, epoch, cfg.views, aug)
    if images.is_floating_point():
        return images
    if images.dim() == 5:
        return finish_views(images, index, seed=cfg.seed, epoch=epoch, cfg=aug)
    return torch.cat([augment(images, index, seed=cfg.seed, epoch=epoch, view=v, cfg=aug) for v in range(cfg.views)])


def contrastive_loss(z: torch.Tensor, cfg: config.Config, step: int) -> torch.Tensor:
    """The configured loss of this rank's anchors against the global batch (paper section 2.1, eq. 1;
    docs/distributed.md).

    Args:
        z: [V*b, D] this rank's projections, view-major (row v*b + i is view v of local sample i).
    Returns:
        scalar, the mean over this rank's V*b anchors. Its mean over ranks is the single-process
        loss on the global batch: the candidates are every rank's rows, put back in the
        single-process order (view-major over the global batch B = k*b); sample ids and each
        anchor's self position are global. Memory is (V*b) x (V*B), never (V*B)^2.
    """
    k, r, v = dist.world_size(), dist.rank(), cfg.views
    b = z.shape[0] // v
    zn = F.normalize(z.float(), dim=1)  # [V*b, D], float32 as the losses require
    cand = dist.gather(zn).view(k, v, b, -1).transpose(0, 1).reshape(v * k * b, -1)  # [V*B, D], view-major
    global_b = k * b
    local = torch.arange(b, device=z.device) + r * b  # global sample ids of this rank's samples
    anchor_sample = local.repeat(v)  # [V*b]
    anchor_pos = (torch.arange(v, device=z.device)[:, None] * global_b + local[None, :]).reshape(
        -1
    )  # [V*b] rows in cand
    cand_sample = torch.arange(global_b, device=z.device).repeat(v)  # [V*B]
    cap = cfg.max_negatives or None
    scores = keyed_uniform(cfg.seed, step, anchor_pos, _NEGATIVES_STREAM, cand.shape[0]) if cap else None  # [V*b, V*B]
    sim, pos, neg = loss.contrastive_terms(zn, anchor_sample, anchor_pos, cand, cand_sample, cap, scores=scores)
    if cfg.loss == "nt_xent":
        return loss.nt_xent_terms(sim, pos, neg, cfg.temperature).mean()
    if cfg.loss == "nt_logistic":
        return loss.nt_logistic_terms(sim, pos, neg, cfg.temperature).mean()
    return loss.margin_triplet_terms(sim, pos, neg, cfg.margin).mean()


def global_rows(b: int, views: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """int64 [V*b]: the row of each of this rank's views in the single-process view-major batch."""
    k, r = dist.world_size(), dist.rank()
    v = torch.arange(views, device=device)[:, None]
    return (v * k * b + r * b + torch.arange(b, device=device)[None, :]).reshape(-1)


def forward_backward(
    model, x: torch.Tensor, cfg: config.Config, step: int, device, precision: str, on_h=None
) -> torch.Tensor:
    """Loss and gradients (in ``.grad``) of one step on this rank's views x [V*b, 3, S, S].

    With ``cfg.chunk_size`` > 0 the gradient cache of :mod:`fastclr.train.gradcache` computes the same
    gradients with activations for ``chunk_size`` views at a time, the chunks a keyed random
    permutation of the global batch's views (:func:`fastclr.train.gradcache.chunk_order`). Under DDP the gradients are
    averaged over ranks, which with :func:`fastclr.train.dist.gather` gives the single-process gradient.
    Returns the global mean loss as a detached device tensor (no host sync).
    ``on_h(h)``, if given, receives the detached representations [V*b, d] (the online probe of
    :mod:`fastclr.eval.monitor`; with the gradient cache, those of its first, gradient-free pass).
    """
    if cfg.chunk_size:
        value = gradcache.forward_backward(
            model,
            x,
            lambda z: contrastive_loss(z, cfg, step),
            cfg.chunk_size,
            lambda: autocast(device, precision),
            on_h,
            gradcache.chunk_order(cfg.seed, step, global_rows(x.shape[0] // cfg.views, cfg.views, x.device)),
        )
    else:
        with autocast(device, precision):
            h, z = model(x)
        if on_h is not None:
            on_h(h.detach())
        value = contrastive_loss(z, cfg, step)
        value.backward()
    return dist.mean(value.detach())


def train_step(
    model, optimizer, x: torch.Tensor, cfg: config.Config, step: int, device, precision: str, on_h=None
) -> torch.Tensor:
    """One optimisation step on views x [V*b, 3, S, S]; returns the loss as a device tensor (no sync)."""
    optimizer.zero_grad(set_to_none=True)
    value = forward_backward(model, x, cfg, step, device, precision, on_h)
    optimizer.step()
    return value
