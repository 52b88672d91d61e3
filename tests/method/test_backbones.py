"""Backbones beyond the ResNets: torchvision families by name, timm models, the paper's wide ResNets.

Every family: h has the advertised width, every parameter gets a gradient through z. Wide ResNets:
the encoder's parameter count is the paper's (v1 Table 6), and width 1 is torchvision's resnet50.
"""

import pytest
import torch
import torchvision

from fastclr import config
from fastclr.errors import UserError
from fastclr.method.encoder import build_encoder, freeze_patch_embedding
from fastclr.method.model import SimCLR
from fastclr.method.wide_resnet import parse, wide_resnet
from fastclr.train.weights import init_encoder

TINY_VIT = {"img_size": 32, "patch_size": 8, "depth": 2}  # a 2-block ViT-Tiny at 32 px: fast on a CPU

FAMILIES = [
    ("vgg11_bn", None, 512),
    ("mobilenet_v3_small", None, 1024),
    ("efficientnet_b0", None, 1280),
    ("regnet_x_400mf", None, 400),
    ("shufflenet_v2_x0_5", None, 1024),
    ("timm:vit_tiny_patch16_224", TINY_VIT, 192),
    ("timm:resnet10t", {"zero_init_last": False}, 512),  # zero-init last BN would leave no gradient at step 0
]


def _grads_everywhere(model: torch.nn.Module, x: torch.Tensor) -> list[str]:
    h, z = model(x)
    z.pow(2).sum().backward()
    return [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or p.grad.abs().sum() == 0)]


@pytest.mark.parametrize("arch,kwargs,width", FAMILIES)
def test_family_encodes_and_trains_every_parameter(arch, kwargs, width):
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = SimCLR(arch, False, head_layers=2, proj_dim=8, arch_kwargs=kwargs)
    assert model.feature_dim == width
    x = torch.randn(4, 3, 32, 32)
    assert model.encode(x).shape == (4, width)
    assert not _grads_everywhere(model, x)


def test_vgg_representation_is_pooled_conv_features():
    """VGG's h is the global average of its last conv stage (no 4096-wide classifier MLP)."""
    torch.manual_seed(0)
    enc, width = build_encoder("vgg11_bn", cifar_stem=False)
    plain = torchvision.models.vgg11_bn()
    plain.load_state_dict(enc.state_dict(), strict=False)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = plain.eval().features(x).mean(dim=(2, 3))
        torch.testing.assert_close(enc.eval()(x), expected)
    assert not any(k.startswith("classifier.") for k in enc.state_dict())


@pytest.mark.parametrize("arch,millions", [("resnet50x1", 23.5), ("resnet50x2", 94.0), ("resnet50x4", 375.0)])
def test_wide_resnet_parameter_count_is_the_papers(arch, millions):
    """SimCLR v1 Table 6: R50 24 M, R50 (2x) 94 M, R50 (4x) 375 M (encoder, classifier removed)."""
    with torch.device("meta"):  # counts without allocating 1.5 GB for the 4x
        enc, width = build_encoder(arch, cifar_stem=False)
    count = sum(p.numel() for p in enc.parameters()) / 1e6
    assert abs(count - millions) / millions < 0.005, count
    assert width == 2048 * parse(arch)[1]


def test_wide_resnet_every_width_multiplied():
    with torch.device("meta"):
        x1, x2 = wide_resnet(50, 1), wide_resnet(50, 2)
        tv = torchvision.models.resnet50()
    assert {k: v.shape for k, v in x1.state_dict().items()} == {k: v.shape for k, v in tv.state_dict().items()}
    for k, v in x1.state_dict().items():  # every conv and BN doubles in both channel dimensions it has
        w = x2.state_dict()[k]
        if v.dim() == 4:
            in_mult = 1 if k == "conv1.weight" else 2  # the RGB input stays 3 channels
            assert w.shape[:2] == (2 * v.shape[0], in_mult * v.shape[1]), k


def test_simclr_v2_names():
    assert parse("r152_3x_sk0") == (152, 3) and parse("r101_2x_sk0") == (101, 2)
    assert parse("r152_3x_sk1") is None and parse("resnet50") is None
    with pytest.raises(UserError, match="not a known model"):
        build_encoder("r152_3x_sk1", cifar_stem=False)  # selective kernels are not built


def test_wide_resnet_small_forward_with_cifar_stem():
    torch.manual_seed(0)
    model = SimCLR("resnet50x2", True, proj_dim=8)
    assert model.encode(torch.randn(2, 3, 16, 16)).shape == (2, 4096)
    assert model.encoder.conv1.out_channels == 128 and model.encoder.conv1.kernel_size == (3, 3)


def test_the_cifar_stem_follows_the_architecture(capsys):
    """The small-image presets set cifar_stem; a backbone without a ResNet stem keeps its own, with a
    note said once, and is the same network as without the setting."""
    torch.manual_seed(0)
    with_stem, _ = build_encoder("vgg11_bn", cifar_stem=True)
    build_encoder("vgg11_bn", cifar_stem=True)
    plain, _ = build_encoder("vgg11_bn", cifar_stem=False)
    shapes = {k: v.shape for k, v in plain.state_dict().items()}
    assert {k: v.shape for k, v in with_stem.state_dict().items()} == shapes
    notes = [line for line in capsys.readouterr().err.splitlines() if "cifar_stem does not apply" in line]
    assert len(notes) <= 1  # once per process (none when an earlier test already noted it)


def test_simclr_defaults_to_the_imagenet_stem():
    model = SimCLR("resnet50x2", proj_dim=8)  # the Python API needs no cifar_stem argument
    assert model.encoder.conv1.kernel_size == (7, 7) and model.feature_dim == 4096


@pytest.mark.parametrize("arch,smallest", [("vgg11_bn", 32), ("resnet18", 8), ("resnet_mini", 8)])
def test_too_small_images_are_refused_with_the_smallest_size(arch, smallest):
    from fastclr.train.preflight import input_size

    encoder, _ = build_encoder(arch, cifar_stem=False)
    input_size(encoder, smallest, arch)  # accepted
    if smallest > 8:
        with pytest.raises(UserError, match=f"cannot take 8x8 images .* image_size={smallest} or larger"):
            input_size(encoder, 8, arch)
    assert encoder.training  # the check leaves the mode as it found it


def test_bad_arch_inputs_are_user_errors():
    with pytest.raises(UserError, match="takes no arch_kwargs"):
        build_encoder("resnet_mini", cifar_stem=True, kwargs={"x": 1})
    with pytest.raises(UserError, match="YAML mapping"):
        config.arch_kwargs(config.Config(arch_kwargs="[1, 2]"))
    pytest.importorskip("timm")
    with pytest.raises(UserError, match="timm has no such model"):
        build_encoder("timm:no_such_net", cifar_stem=False)
    with pytest.raises(UserError, match="refused"):
        build_encoder("timm:vit_tiny_patch16_224", cifar_stem=False, kwargs={"no_such_argument": 1})


def test_arch_kwargs_from_yaml_and_set_round_trip(tmp_path):
    preset = tmp_path / "vit.yaml"
    preset.write_text("arch: timm:vit_tiny_patch16_224\narch_kwargs: {img_size: 32, patch_size: 4}\n")
    cfg = config.build_config(str(preset), {}, ["trackers=[tensorboard, mlflow]"])
    assert config.arch_kwargs(cfg) == {"img_size": 32, "patch_size": 4}
    again = config.build_config(str(preset), {}, [f"arch_kwargs={cfg.arch_kwargs}"])
    assert config.arch_kwargs(again) == {"img_size": 32, "patch_size": 4}


def test_frozen_patch_projection_gets_no_gradient_and_the_rest_does():
    pytest.importorskip("timm")
    torch.manual_seed(0)
    model = SimCLR("timm:vit_tiny_patch16_224", False, proj_dim=8, arch_kwargs=TINY_VIT)
    assert freeze_patch_embedding(model.encoder) == 2  # conv weight and bias
    assert not _grads_everywhere(model, torch.randn(2, 3, 32, 32))
    assert all(p.grad is None for p in model.encoder.patch_embed.parameters())
    with pytest.raises(UserError, match="no patch projection"):
        freeze_patch_embedding(SimCLR("resnet_mini", True).encoder)


def test_init_from_a_timm_weights_file(tmp_path):
    """A timm state dict with its classifier loads into ``timm:NAME`` with every key checked."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, **TINY_VIT).eval()
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    enc, _ = build_encoder("timm:vit_tiny_patch16_224", cifar_stem=False, kwargs=TINY_VIT)
    assert init_encoder(enc, tmp_path / "vit.pth")["ignored"] == ["head.bias", "head.weight"]
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc.eval()(x), source.forward_head(source.forward_features(x), pre_logits=True))
