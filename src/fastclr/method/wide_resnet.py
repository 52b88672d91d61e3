"""The SimCLR paper's wide ResNets: every width multiplied, the stem included.

SimCLR v1 (section 4.2 and Table 6) trains ResNet-50 (1x), (2x) and (4x): the width of every
layer, the 7x7 stem's 64 channels and each stage's bottleneck and output alike, is multiplied by
1, 2 or 4 (the reference code's ``width_multiplier`` in ``tf2/resnet.py``). torchvision's
``wide_resnet50_2`` is a different network: it widens only the 3x3 convolution inside each
bottleneck (Zagoruyko and Komodakis' wide ResNet) and keeps 2048-d outputs. SimCLR v2 names its
encoders ``r{depth}_{width}x_sk{0|1}`` (``r152_3x_sk1`` is its largest); the ``sk0`` ones (no
selective kernels) are built here, ``sk1`` is not.

Parameter counts of the encoder (classifier removed), as v1 Table 6 lists them: R50 1x 23.5 M
(24 M), 2x 93.9 M (94 M), 4x 375.4 M (375 M). The encoders keep torchvision's attribute names (conv1, bn1, layer1..4,
fc), so their state dicts read like torchvision's, with wider tensors.
"""

from __future__ import annotations

import re

from torch import nn
from torchvision.models.resnet import Bottleneck, ResNet

DEPTHS = {50: (3, 4, 6, 3), 101: (3, 4, 23, 3), 152: (3, 8, 36, 3)}  # bottleneck blocks per stage
WIDTHS = (1, 2, 3, 4)
_V1 = re.compile(r"^resnet(50|101|152)x([1-4])$")  # resnet50x2: SimCLR v1's naming
_V2 = re.compile(r"^r(50|101|152)_([1-4])x_sk0$")  # r152_3x_sk0: SimCLR v2's naming


class WideResNet(ResNet):
    """A bottleneck ResNet whose every width is ``width`` times torchvision's (``forward`` is ResNet's).

    Args:
        layers: bottleneck blocks per stage, e.g. (3, 4, 6, 3) for depth 50.
        width: the multiplier of every channel count (1 gives torchvision's resnet50 exactly).
        num_classes: outputs of the classifier ``fc`` (the encoder replaces it by Identity).
    """

    def __init__(self, layers: tuple[int, int, int, int], width: int, num_classes: int = 1000):
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes the 64-channel stem; set its fields here
        self._norm_layer = nn.BatchNorm2d
        self.inplanes, self.dilation, self.groups, self.base_width = 64 * width, 1, 1, 64
        self.conv1 = nn.Conv2d(3, self.inplanes, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(Bottleneck, 64 * width, layers[0])
        self.layer2 = self._make_layer(Bottleneck, 128 * width, layers[1], stride=2)
        self.layer3 = self._make_layer(Bottleneck, 256 * width, layers[2], stride=2)
        self.layer4 = self._make_layer(Bottleneck, 512 * width, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(512 * width * Bottleneck.expansion, num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)


def parse(arch: str) -> tuple[int, int] | None:
    """(depth, width) of a wide-ResNet name (``resnet50x2``, ``r101_2x_sk0``), None for any other name."""
    match = _V1.match(arch) or _V2.match(arch)
    return (int(match.group(1)), int(match.group(2))) if match else None


def wide_resnet(depth: int, width: int, num_classes: int = 1000) -> WideResNet:
    """ResNet-``depth`` with every width multiplied by ``width`` (SimCLR v1 section 4.2)."""
    return WideResNet(DEPTHS[depth], width, num_classes)


NAMES = ("resnet50x1", "resnet50x2", "resnet50x4", "r101_2x_sk0", "r152_3x_sk0")  # for help texts
