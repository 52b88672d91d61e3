"""Encoders f: images -> representation h (the pooled features).

* torchvision's ResNets (18 to 152) and Zagoruyko's wide ResNets, optionally with the CIFAR stem for
  small images (paper Appendix B.9: first conv 3x3 stride 1, no max-pool);
* the SimCLR paper's wide ResNets with every width multiplied (``resnet50x2``, ``resnet50x4``,
  SimCLR v2's ``r152_3x_sk0``; :mod:`fastclr.method.wide_resnet`);
* a small ResNet for CPU demos (``resnet_mini``, ``resnet_micro``);
* any other torchvision classification model by name with its classifier removed; VGG keeps its
  convolutional features and global-average-pools them (our choice: its 4096-wide classifier MLP,
  102 M parameters at 7x7, is a classifier, not a representation);
* any timm model as ``timm:NAME`` (``pip install 'fastclr[timm]'``), built with ``num_classes=0`` so
  it returns its pooled features (timm's ``forward_features`` + ``forward_head(pre_logits=True)``).

Keyword arguments from the config (``arch_kwargs``) go to the torchvision / timm constructor, e.g.
``{img_size: 32, patch_size: 4}`` for a timm ViT at 32 px.
"""

from __future__ import annotations

import torch
import torchvision
from torch import nn
from torchvision.models.resnet import BasicBlock

from fastclr import log
from fastclr.errors import UserError
from fastclr.method import wide_resnet

RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "wide_resnet50_2", "wide_resnet101_2")
TIMM_PREFIX = "timm:"


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
    features = getattr(model, "features", None)
    if isinstance(features, nn.Sequential) and type(model).__name__ == "VGG":
        model.avgpool = nn.AdaptiveAvgPool2d(1)  # h = GAP of the last conv stage (see the module docstring)
        model.classifier = nn.Identity()
        return [m for m in features if isinstance(m, nn.Conv2d)][-1].out_channels
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


def has_resnet_stem(model: nn.Module) -> bool:
    """Whether ``model`` has the stem the CIFAR variant replaces: a ``conv1`` and a ``maxpool``."""
    return isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")


_NOTED: set[str] = set()


def _cifar_stem(model: nn.Module, arch: str) -> None:
    """Swap a ResNet's 7x7 stride-2 stem and max-pool for a 3x3 stride-1 conv (the paper's Appendix B.9).

    Other architectures keep their own stem: ``cifar_stem`` (on in the small-image presets) is then
    ignored with a note, once per architecture and process.
    """
    if not has_resnet_stem(model):
        if arch not in _NOTED:
            _NOTED.add(arch)
            log.info(f"note: --arch {arch} has no ResNet stem; cifar_stem does not apply and is ignored")
        return
    conv1 = model.conv1
    assert isinstance(conv1, nn.Conv2d)
    model.conv1 = nn.Conv2d(3, conv1.out_channels, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def _timm_encoder(name: str, kwargs: dict) -> tuple[nn.Module, int]:
    """A timm model without its classifier (``num_classes=0``): forward returns the pooled features."""
    try:
        import timm
    except ImportError:
        raise UserError(f"--arch timm:{name} needs the timm package: pip install 'fastclr[timm]'") from None
    if not timm.is_model(name):
        raise UserError(f"--arch timm:{name}: timm has no such model; list them with timm.list_models('*vit*')")
    try:
        model = timm.create_model(name, pretrained=False, num_classes=0, **kwargs)
    except TypeError as e:
        raise UserError(f"--arch timm:{name}: arch_kwargs {kwargs} refused ({str(e).splitlines()[0][:120]})") from None
    return model, int(model.num_features)  # type: ignore[arg-type]


def _torchvision_encoder(arch: str, kwargs: dict) -> nn.Module:
    try:
        return torchvision.models.get_model(arch, weights=None, **kwargs)
    except (ValueError, KeyError):
        names = ", ".join(("resnet_mini",) + RESNETS + wide_resnet.NAMES)
        raise UserError(
            f"--arch {arch!r} is not a known model; try one of {names}, any torchvision classification model, "
            "or timm:NAME"
        ) from None
    except TypeError as e:
        raise UserError(f"--arch {arch}: arch_kwargs {kwargs} refused ({str(e).splitlines()[0][:120]})") from None


def build_encoder(arch: str, cifar_stem: bool, kwargs: dict | None = None) -> tuple[nn.Module, int]:
    """Build encoder f and return it with the width d of h = f(x).

    Args:
        arch: "resnet_mini", a ResNet name in RESNETS, a wide ResNet of :mod:`fastclr.method.wide_resnet`
            ("resnet50x2"), any torchvision classification model, or "timm:NAME".
        cifar_stem: replace the 7x7 stride-2 stem and max-pool by a 3x3 stride-1 conv (32x32 inputs).
        kwargs: keyword arguments of the torchvision / timm constructor (the config's ``arch_kwargs``).
    """
    kwargs = dict(kwargs or {})
    if arch in ("resnet_mini", "resnet_micro") or wide_resnet.parse(arch):
        if kwargs:
            raise UserError(f"--arch {arch} takes no arch_kwargs (got {kwargs}); set arch_kwargs to ''")
    if arch == "resnet_mini":
        enc = MiniResNet(small_input=cifar_stem)
        return enc, enc.num_features
    if arch == "resnet_micro":  # half the widths of resnet_mini: a smaller student for distillation demos
        enc = MiniResNet((16, 32, 64, 128), small_input=cifar_stem)
        return enc, enc.num_features
    if arch.startswith(TIMM_PREFIX):
        model, width = _timm_encoder(arch[len(TIMM_PREFIX) :], kwargs)
        if cifar_stem:
            _cifar_stem(model, arch)
        return model, width
    wide = wide_resnet.parse(arch)
    model = wide_resnet.wide_resnet(*wide) if wide else _torchvision_encoder(arch, kwargs)
    if cifar_stem:
        _cifar_stem(model, arch)
    width = _strip_classifier(model)
    return model, width


def freeze_patch_embedding(encoder: nn.Module) -> int:
    """Freeze a ViT's patch projection (MoCo v3 section 4.2: a fixed random patch projection
    stabilises contrastive ViT training); returns how many tensors were frozen.

    Finds timm's ``patch_embed`` or torchvision's ``conv_proj``; UserError for encoders without one.
    """
    module = getattr(encoder, "patch_embed", None) or getattr(encoder, "conv_proj", None)
    if not isinstance(module, nn.Module):
        raise UserError(f"freeze_patch_embed=true: encoder {type(encoder).__name__} has no patch projection; use a ViT")
    params = list(module.parameters())
    for p in params:
        p.requires_grad_(False)
    return len(params)
