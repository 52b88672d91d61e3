"""One SimCLR optimisation step: views, forward, loss, backward, update.

The step never synchronises with the host: it returns the loss as a device tensor and the loop
reads it only every ``log_every`` steps.
"""
from __future__ import annotations

import torch

from . import config, loss
from .augment import AugmentConfig, augment
from .model import SimCLR
from .precision import autocast


def augment_config(cfg: config.Config) -> AugmentConfig:
    return AugmentConfig(size=cfg.image_size, min_scale=cfg.min_scale, flip=cfg.flip, color_strength=cfg.color_strength, blur=cfg.blur)


def build_model(cfg: config.Config) -> SimCLR:
    return SimCLR(cfg.arch, cfg.cifar_stem, cfg.head_layers, cfg.head_hidden or None, cfg.proj_dim)


def make_views(images: torch.Tensor, index: torch.Tensor, epoch: int, cfg: config.Config, aug: AugmentConfig) -> torch.Tensor:
    """All V views of a batch, view-major: rows v*b .. (v+1)*b - 1 are view v. [V*b, 3, S, S]."""
    return torch.cat([augment(images, index, seed=cfg.seed, epoch=epoch, view=v, cfg=aug) for v in range(cfg.views)])


def contrastive_loss(z: torch.Tensor, cfg: config.Config, step: int) -> torch.Tensor:
    """The configured loss on view-major projections z [V*b, D]."""
    views = z.float().chunk(cfg.views)
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step) if cfg.max_negatives else None
    cap = cfg.max_negatives or None
    if cfg.loss == "nt_xent":
        return loss.nt_xent(*views, temperature=cfg.temperature, max_negatives=cap, generator=gen)
    if cfg.loss == "nt_logistic":
        return loss.nt_logistic(*views, temperature=cfg.temperature, max_negatives=cap, generator=gen)
    return loss.margin_triplet(*views, margin=cfg.margin, max_negatives=cap, generator=gen)


def train_step(model, optimizer, x: torch.Tensor, cfg: config.Config, step: int, device, precision: str) -> torch.Tensor:
    """One optimisation step on views x [V*b, 3, S, S]; returns the loss as a device tensor (no sync)."""
    with autocast(device, precision):
        _, z = model(x)
    value = contrastive_loss(z, cfg, step)
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    optimizer.step()
    return value.detach()
