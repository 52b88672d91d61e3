"""Encoders f: images -> representation h (the pooled features).

torchvision's ResNets (18 to 152) and wide ResNets, optionally with the CIFAR stem for small
images (paper Appendix B.9: first conv 3x3 stride 1, no max-pool), a small ResNet for CPU
demos, and any other torchvision classification model by name with its classifier removed.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from fastclr.errors import UserError

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2")


class MiniResNet(nn.Module):
    """A four-stage ResNet with one basic block per stage and narrow widths, for CPU demos.

    Built from torchvision's BasicBlock, with the same attribute names as torchvision's ResNet
    (conv1, bn1, layer1..4) so weights and tooling carry over.
    """

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128, 256), small_input: bool = True):
        super().__init__()
        w0 = widths[0]
        if small_input:
            self.conv1 = nn.Conv2d(3, w0, 3, 1, 1, bias=False)
            self.maxpool: nn.Module = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(3, w0, 7, 2, 3, bias=False)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.bn1 = nn.BatchNorm2d(w0)
        self.relu = nn.ReLU(inplace=True)
        layers, cin = [], w0
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            down = None
            if stride != 1 or cin != w:
                down = nn.Sequential(nn.Conv2d(cin, w, 1, stride, bias=False), nn.BatchNorm2d(w))
            layers.append(BasicBlock(cin, w, stride, down))
            cin = w
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Identity()
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def _strip_classifier(model: nn.Module) -> int:
    """Replace the last classification layer with Identity; return the feature width."""
    if hasattr(model, "fc") and isinstance(model.fc, nn.Linear):
        width = model.fc.in_features
        model.fc = nn.Identity()
        return width
    if hasattr(model, "classifier"):
        head = model.classifier
        if isinstance(head, nn.Linear):
            model.classifier = nn.Identity()
            return head.in_features
        if isinstance(head, nn.Sequential):
            for i in reversed(range(len(head))):
                layer = head[i]
                if isinstance(layer, nn.Linear):
                    head[i] = nn.Identity()
                    return layer.in_features
    if hasattr(model, "heads") and hasattr(model.heads, "head"):  # vision transformers
        width = int(model.heads.head.in_features)  # type: ignore[union-attr,arg-type]
        model.heads.head = nn.Identity()
        return width
    raise UserError(f"--arch {type(model).__name__}: cannot find its classifier to remove; use a ResNet")


def build_encoder(arch: str, cifar_stem: bool) -> tuple[nn.Module, int]:
    """Build encoder f and return it with the width d of h = f(x).

    Args:
        arch: "resnet_mini", a ResNet name in RESNETS, or any torchvision classification model.
        cifar_stem: replace the 7x7 stride-2 stem and max-pool by a 3x3 stride-1 conv (32x32 inputs).
    """
    if arch == "resnet_mini":
        enc = MiniResNet(small_input=cifar_stem)
        return enc, enc.num_features
    if arch == "resnet_micro":  # half the widths of resnet_mini: a smaller student for distillation demos
        enc = MiniResNet((16, 32, 64, 128), small_input=cifar_stem)
        return enc, enc.num_features
    try:
        model = torchvision.models.get_model(arch, weights=None)
    except (ValueError, KeyError):
        names = ", ".join(("resnet_mini",) + RESNETS)
        raise UserError(
            f"--arch {arch!r} is not a known model; try one of {names} (or any torchvision classification model)"
        ) from None
    if cifar_stem:
        if not hasattr(model, "conv1") or not hasattr(model, "maxpool"):
            raise UserError(f"--arch {arch}: the CIFAR stem applies to ResNets only; set cifar_stem=false")
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
        model.maxpool = nn.Identity()
    width = _strip_classifier(model)
    return model, width
