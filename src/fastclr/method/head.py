"""Projection head g: h -> z (paper section 2.1 and section 4.2).

As in the reference code (google-research/simclr tf2/model.py, ProjectionHead): every layer is
Linear without bias followed by BN; hidden layers have a BN shift and a ReLU; the last layer's BN
has a scale but no shift and no ReLU. v1 uses 2 layers, v2 uses 3; SimCLRv2 fine-tunes from the
output of the first layer.
"""

from __future__ import annotations

import torch
from torch import nn


class ScaleOnlyBatchNorm1d(nn.Module):
    """BatchNorm with a learnable scale and no shift (the reference's center=False)."""

    def __init__(self, dim: int):
        super().__init__()
        self.bn = nn.BatchNorm1d(dim, affine=False)
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.weight


class ProjectionHead(nn.Module):
    """MLP head: (Linear - BN - ReLU) x (layers - 1), then Linear - BN(scale only).

    Args:
        in_dim: width d of h.
        hidden_dim: width of the hidden layers (the paper uses d).
        out_dim: width of z (128 in the paper).
        layers: 2 (v1) or 3 (v2); 1 gives a single linear projection.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int = 128, layers: int = 2):
        super().__init__()
        if layers < 1:
            raise ValueError(f"head_layers must be >= 1, got {layers}")
        blocks: list[nn.Module] = []
        dim = in_dim
        for _ in range(layers - 1):
            blocks.append(
                nn.Sequential(nn.Linear(dim, hidden_dim, bias=False), nn.BatchNorm1d(hidden_dim), nn.ReLU(inplace=True))
            )
            dim = hidden_dim
        blocks.append(nn.Sequential(nn.Linear(dim, out_dim, bias=False), ScaleOnlyBatchNorm1d(out_dim)))
        self.layers = nn.ModuleList(blocks)

    def forward(self, h: torch.Tensor, upto: int | None = None) -> torch.Tensor:
        """z = g(h); with ``upto = k`` return the output of the first k layers (SimCLRv2 fine-tuning)."""
        for layer in self.layers[: upto if upto is not None else len(self.layers)]:
            h = layer(h)
        return h

    def width(self, upto: int) -> int:
        """Output width after the first ``upto`` layers."""
        return self.layers[upto - 1][0].out_features  # type: ignore[index]
