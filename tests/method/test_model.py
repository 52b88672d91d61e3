"""Encoders and heads: shapes, the CIFAR stem, the reference head layout, every parameter trained."""

import pytest
import torch
from torch import nn

from fastclr.errors import UserError
from fastclr.method.encoder import build_encoder
from fastclr.method.head import ProjectionHead, ScaleOnlyBatchNorm1d
from fastclr.method.model import SimCLR


@pytest.mark.parametrize(
    "arch,stem,size,width",
    [
        ("resnet_mini", True, 16, 256),
        ("resnet18", True, 32, 512),
        ("resnet50", False, 64, 2048),
        ("mobilenet_v3_small", False, 64, 1024),
    ],
)
def test_every_parameter_gets_a_gradient(arch, stem, size, width):
    torch.manual_seed(0)
    model = SimCLR(arch, stem, head_layers=2, proj_dim=16)
    assert model.feature_dim == width
    h, z = model(torch.randn(4, 3, size, size))
    assert h.shape == (4, width) and z.shape == (4, 16)
    z.pow(2).sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing


def test_cifar_stem_keeps_resolution():
    enc, _ = build_encoder("resnet18", cifar_stem=True)
    assert enc.conv1.kernel_size == (3, 3) and enc.conv1.stride == (1, 1)
    assert isinstance(enc.maxpool, nn.Identity)
    assert isinstance(enc.fc, nn.Identity)


def test_head_layout_matches_reference():
    head = ProjectionHead(512, 512, 128, layers=3)
    assert len(head.layers) == 3
    for layer in head.layers[:-1]:
        lin, bn, act = layer
        assert lin.bias is None and isinstance(bn, nn.BatchNorm1d) and bn.affine and isinstance(act, nn.ReLU)
    lin, bn = head.layers[-1]
    assert lin.bias is None and lin.out_features == 128 and isinstance(bn, ScaleOnlyBatchNorm1d)
    assert not bn.bn.affine  # scale only, no shift (center=False in the reference)
    h = torch.randn(8, 512)
    assert head(h, upto=1).shape == (8, 512) and head.width(1) == 512


def test_unknown_arch_is_a_user_error():
    with pytest.raises(UserError, match="not a known model"):
        build_encoder("resnet9000", cifar_stem=False)
