"""SimCLR's network: encoder f and projection head g, with the loss kept outside."""

from __future__ import annotations

import torch
from torch import nn

from fastclr.method.encoder import build_encoder
from fastclr.method.head import ProjectionHead


class SimCLR(nn.Module):
    """f and g of the paper: ``encode(x) -> h`` and ``project(h) -> z``.

    Args:
        arch: encoder name (see :func:`fastclr.method.encoder.build_encoder`).
        cifar_stem: 3x3 stride-1 stem without max-pool, for 32x32-scale images (ResNets; default: the
            ImageNet stem, as the paper's ImageNet models).
        head_layers: 2 (v1) or 3 (v2).
        head_hidden: hidden width of the head; None uses d, the width of h (as the paper).
        proj_dim: width of z.
        arch_kwargs: keyword arguments of the encoder's torchvision / timm constructor.
        encoder: a built encoder and its width d (text encoders, :mod:`fastclr.method.text_encoder`), used
            instead of building ``arch``.
    """

    def __init__(
        self,
        arch: str,
        cifar_stem: bool = False,
        head_layers: int = 2,
        head_hidden: int | None = None,
        proj_dim: int = 128,
        arch_kwargs: dict | None = None,
        encoder: tuple[nn.Module, int] | None = None,
    ):
        super().__init__()
        built = encoder if encoder is not None else build_encoder(arch, cifar_stem, arch_kwargs)
        self.encoder, self.feature_dim = built
        self.head = ProjectionHead(self.feature_dim, head_hidden or self.feature_dim, proj_dim, head_layers)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x): [N, 3, H, W] (text: token ids [N, L]) -> [N, d]."""
        return self.encoder(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z = g(h): [N, d] -> [N, proj_dim]."""
        return self.head(h)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (h, z)."""
        h = self.encode(x)
        return h, self.project(h.float())
