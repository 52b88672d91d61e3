"""--init: torchvision/timm state dicts and safetensors map onto the encoder with keys checked exactly;
crafted files holding pickled code are refused by every command and the code never runs."""

import pickle

import pytest
import torch
import torchvision

from evalkit import (
    cli,
    cli_subprocess,
    digit_folder,
    last_json,
    make_checkpoint,
    one_line_error,
)
from fastclr.errors import UserError
from fastclr.method.encoder import build_encoder
from fastclr.train.weights import init_encoder


def test_torchvision_state_dict_loads_and_fc_is_ignored(tmp_path):
    src = torchvision.models.resnet18()
    torch.save(src.state_dict(), tmp_path / "r18.pth")
    enc, _ = build_encoder("resnet18", cifar_stem=False)
    report = init_encoder(enc, tmp_path / "r18.pth")
    assert report["ignored"] == ["fc.bias", "fc.weight"]
    src.fc = torch.nn.Identity()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(enc.eval()(x), src.eval()(x))


def test_wrapped_checkpoint_and_old_bn_counters(tmp_path):
    src = torchvision.models.resnet18()
    state = {f"module.{k}": v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state}, tmp_path / "wrapped.pth")
    enc, _ = build_encoder("resnet18", cifar_stem=False)
    init_encoder(enc, tmp_path / "wrapped.pth")
    assert torch.equal(enc.layer4[1].bn2.running_var, src.layer4[1].bn2.running_var)


def test_missing_and_unexpected_keys_are_named(tmp_path):
    state = torchvision.models.resnet18().state_dict()
    del state["layer3.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    enc, _ = build_encoder("resnet18", cifar_stem=False)
    with pytest.raises(UserError, match=r"1 missing \['layer3.0.conv1.weight'\], 1 unexpected \['extra.weight'\]"):
        init_encoder(enc, tmp_path / "bad.pth")


def test_stem_mismatch_is_explained(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "imagenet.pth")
    enc, _ = build_encoder("resnet18", cifar_stem=True)
    with pytest.raises(UserError, match="CIFAR stem"):
        init_encoder(enc, tmp_path / "imagenet.pth")


class _Evil:
    """Unpickling this would create the marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(scope="module")
def evil(tmp_path_factory):
    root = tmp_path_factory.mktemp("evil")
    marker = root / "PWNED"
    torch.save({"format": "fastclr", "config": {}, "model": {}, "payload": _Evil(marker)}, root / "evil.pt")
    with open(root / "evil_plain.pth", "wb") as f:
        pickle.dump({"conv1.weight": _Evil(marker)}, f)
    assert not marker.exists()
    return root, marker


def test_crafted_checkpoint_refused_by_every_command(evil, tmp_path):
    root, marker = evil
    ckpt = str(root / "evil.pt")
    commands = [
        ("knn", "--checkpoint", ckpt),
        ("linear", "--checkpoint", ckpt),
        ("finetune", "--checkpoint", ckpt, "--label-fraction", "0.1"),
        ("distill", "--teacher", ckpt, "--data", "digits"),
        ("embed", "--checkpoint", ckpt, "--out", str(tmp_path / "e.npy")),
        ("export", "--checkpoint", ckpt, "--format", "safetensors", "--out", str(tmp_path / "e.safetensors")),
    ]
    line = one_line_error(cli_subprocess(*commands[0]))  # end to end: exit status 2, one line on stderr
    assert "refused" in line and not marker.exists()
    for args in commands:
        line = one_line_error(cli(*args))
        assert "refused" in line, (args, line)
        assert not marker.exists(), args


def test_crafted_init_file_refused(evil, tmp_path):
    root, marker = evil
    folder = digit_folder(tmp_path / "data", 3, 1)
    good, _ = make_checkpoint(tmp_path / "last.pt", str(folder))
    line = one_line_error(
        cli(
            "finetune",
            "--checkpoint",
            str(good),
            "--label-fraction",
            "1",
            "--epochs",
            "1",
            "--init",
            str(root / "evil_plain.pth"),
        )
    )
    assert "refused" in line and not marker.exists()


def test_init_from_export_in_finetune(tmp_path):
    """--init with our own safetensors export: the fine-tune starts from exactly those weights."""
    pytest.importorskip("safetensors")
    folder = digit_folder(tmp_path / "data", 3, 1)
    src, _ = make_checkpoint(tmp_path / "a.pt", str(folder), seed=1)
    last_json(
        cli("export", "--checkpoint", str(src), "--format", "safetensors", "--out", str(tmp_path / "a.safetensors"))
    )
    other, _ = make_checkpoint(tmp_path / "b.pt", str(folder), seed=2)
    res = last_json(
        cli(
            "finetune",
            "--checkpoint",
            str(other),
            "--label-fraction",
            "1",
            "--epochs",
            "1",
            "--lr",
            "1e-9",
            "--init",
            str(tmp_path / "a.safetensors"),
            "--out",
            str(tmp_path / "ft"),
        )
    )
    assert res["encoder"].endswith("a.safetensors")
    a = torch.load(src, weights_only=True)["model"]
    b = torch.load(tmp_path / "ft" / "finetuned.pt", weights_only=True)["model"]
    conv = "encoder.layer2.conv1.weight"
    assert torch.allclose(a[conv], b[conv], atol=1e-6)  # lr ~ 0: still the --init weights, not b's


def test_pretrain_starts_from_init(tmp_path):
    """pretrain --init: the run's weights start from the file (lr ~ 0 keeps them there)."""
    pytest.importorskip("safetensors")
    src, _ = make_checkpoint(tmp_path / "a.pt", "digits", seed=3)
    last_json(
        cli("export", "--checkpoint", str(src), "--format", "safetensors", "--out", str(tmp_path / "a.safetensors"))
    )
    out = tmp_path / "run"
    last_json(
        cli(
            "pretrain",
            "--out",
            str(out),
            "--init",
            str(tmp_path / "a.safetensors"),
            "--arch",
            "resnet_mini",  # the file's architecture
            "--max-steps",
            "1",
            "--batch-size",
            "32",
            "--set",
            "lr=1e-12",
            "--set",
            "eval=false",
            "--set",
            "image_size=8",
            "--set",
            "max_images=64",
        )
    )
    a = torch.load(src, weights_only=True)["model"]
    b = torch.load(out / "checkpoints" / "last.pt", weights_only=True)["model"]
    conv = "encoder.layer3.conv2.weight"
    assert torch.allclose(a[conv], b[conv], atol=1e-6)


def test_pretrain_init_with_wrong_arch_is_one_line(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    line = one_line_error(
        cli("pretrain", "--out", str(tmp_path / "run"), "--init", str(tmp_path / "r18.pth"), "--max-steps", "1")
    )
    assert "keys do not match the encoder" in line
