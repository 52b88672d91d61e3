"""Exports: torchvision weights load with strict=True and give the same features; ONNX, TorchScript and
safetensors agree with PyTorch; a non-torchvision encoder is refused."""

import json

import pytest
import torch
import torchvision

from evalkit import cli, last_json, make_checkpoint, one_line_error
from fastclr.eval.export import export, torchvision_model
from fastclr.method.model import SimCLR
from fastclr.train.weights import init_encoder


def _features(fn, size, seed=1):
    x = torch.randn(3, 3, size, size, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return fn(x)


@pytest.mark.parametrize("cifar_stem,size", [(True, 16), (False, 32)])
def test_torchvision_strict_and_same_features(tmp_path, cifar_stem, size):
    ckpt, model = make_checkpoint(
        tmp_path / "last.pt", "digits", arch="resnet18", cifar_stem=cifar_stem, image_size=size
    )
    res = last_json(
        cli("export", "--checkpoint", str(ckpt), "--format", "torchvision", "--out", str(tmp_path / "r18.pt"))
    )
    assert res["format"] == "torchvision" and res["max_abs_diff"] == 0.0
    state = torch.load(tmp_path / "r18.pt", weights_only=True)
    plain = torchvision.models.resnet18()  # the plain constructor, stem adapted as the docstring says
    if cifar_stem:
        plain.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        plain.maxpool = torch.nn.Identity()
    assert plain.load_state_dict(state, strict=True)  # raises on any missing or unexpected key
    assert torch.count_nonzero(state["fc.weight"]) == 0  # the documented placeholder classifier
    plain.fc = torch.nn.Identity()
    model.eval()
    torch.testing.assert_close(_features(plain.eval(), size), _features(model.encode, size), atol=1e-5, rtol=0)
    meta = json.loads((tmp_path / "r18.pt.json").read_text())
    assert meta["arch"] == "resnet18" and meta["cifar_stem"] is cifar_stem


def test_torchvision_refuses_resnet_mini(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "last.pt", "digits")
    assert "safetensors" in one_line_error(
        cli("export", "--checkpoint", str(ckpt), "--format", "torchvision", "--out", str(tmp_path / "x.pt"))
    )


def test_onnx_matches_pytorch(tmp_path):
    pytest.importorskip("onnxruntime")
    import onnxruntime

    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True).eval()
    res = export(model, "resnet_mini", True, 16, "onnx", tmp_path / "enc.onnx")
    assert res["max_abs_diff"] < 1e-4
    session = onnxruntime.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    x = torch.randn(5, 3, 16, 16)  # another batch size: the batch axis is dynamic
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        assert float((got - model.encode(x)).abs().max()) < 1e-4


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
def test_torchscript_matches_pytorch(tmp_path):
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True).eval()
    export(model, "resnet_mini", True, 16, "torchscript", tmp_path / "enc.pt")
    loaded = torch.jit.load(str(tmp_path / "enc.pt"))
    torch.testing.assert_close(_features(loaded, 16), _features(model.encode, 16), atol=1e-5, rtol=0)


def test_safetensors_round_trip_through_init(tmp_path):
    pytest.importorskip("safetensors")
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True).eval()
    export(model, "resnet_mini", True, 16, "safetensors", tmp_path / "enc.safetensors")
    fresh = SimCLR("resnet_mini", True).eval()
    init_encoder(fresh.encoder, tmp_path / "enc.safetensors")
    assert torch.equal(_features(fresh.encode, 16), _features(model.encode, 16))


def test_torchvision_helper_is_the_plain_constructor():
    m = torchvision_model("resnet18", True)
    assert isinstance(m.maxpool, torch.nn.Identity) and m.conv1.kernel_size == (3, 3) and m.fc.out_features == 1000


# Every backbone of the README's table in every format it claims (tests/eval/test_export_backbones.py also
# pretrains two of them first): the export gives the PyTorch encoder's h on a batch it was not traced with.
EVERY_BACKBONE = [
    pytest.param("resnet_mini", True, 16, None, id="resnet_mini"),
    pytest.param("resnet18", True, 32, None, id="resnet18-cifar_stem"),
    pytest.param("vgg11_bn", False, 32, None, id="vgg11_bn"),
    pytest.param("timm:vit_tiny_patch16_224", False, 32, {"img_size": 32, "patch_size": 8, "depth": 2}, id="vit"),
    pytest.param("resnet50x2", True, 16, None, id="resnet50x2", marks=pytest.mark.slow),
]


def _exported_features(fmt: str, path, model: SimCLR, arch: str, kwargs, size: int) -> torch.Tensor:
    x = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(7))
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    if fmt == "torchscript":
        with torch.no_grad():
            return torch.jit.load(str(path))(x)
    fresh = SimCLR(arch, arch != "vgg11_bn" and not arch.startswith("timm:"), arch_kwargs=kwargs).eval()
    init_encoder(fresh.encoder, path)  # safetensors: into a freshly built encoder
    with torch.no_grad():
        return fresh.encode(x)


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit.load is deprecated upstream
@pytest.mark.parametrize("fmt", ["safetensors", "onnx", "torchscript"])
@pytest.mark.parametrize("arch,cifar_stem,size,kwargs", EVERY_BACKBONE)
def test_every_backbone_exports_in_every_format(tmp_path, arch, cifar_stem, size, kwargs, fmt):
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    pytest.importorskip({"onnx": "onnxruntime", "safetensors": "safetensors"}.get(fmt, "torch"))
    torch.manual_seed(0)
    model = SimCLR(arch, cifar_stem, arch_kwargs=kwargs).eval()
    out = tmp_path / f"enc.{fmt}"
    res = export(model, arch, cifar_stem, size, fmt, out, arch_kwargs=kwargs)
    assert res["feature_dim"] == model.feature_dim
    got = _exported_features(fmt, out, model, arch, kwargs, size)
    x = torch.randn(5, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = model.encode(x)
    assert float((got - expected).abs().max()) < 1e-4
