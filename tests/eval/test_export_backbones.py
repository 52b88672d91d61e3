"""New backbones end to end: a timm ViT and a VGG pretrain 2 steps, export to ONNX and safetensors,
and the exports give the PyTorch encoder's h; a wide ResNet exports too (no torchvision constructor)."""

import json

import pytest
import torch

from evalkit import cli, last_json
from fastclr.train import restore

BACKBONES = [
    ("timm:vit_tiny_patch16_224", "{img_size: 32, patch_size: 8, depth: 2}", 192),
    ("vgg11_bn", "", 512),
]


@pytest.mark.slow
@pytest.mark.parametrize("arch,kwargs,width", BACKBONES)
def test_pretrain_two_steps_then_onnx_matches_pytorch(tmp_path, arch, kwargs, width):
    if arch.startswith("timm:"):
        pytest.importorskip("timm")
    ort = pytest.importorskip("onnxruntime")
    run = tmp_path / "run"
    sets = ["cifar_stem=false", "image_size=32", "batch_size=16", "max_images=64", "eval=false", "workers=0"]
    sets += ["trackers=none", "device=cpu", "log_every=1", f"arch_kwargs={kwargs}"]
    args = ["pretrain", "--arch", arch, "--max-steps", "2", "--out", str(run)]
    for s in sets:
        args += ["--set", s]
    trained = last_json(cli(*args))
    assert trained["steps"] == 2 and trained["final_loss"] > 0
    ckpt = run / "checkpoints" / "last.pt"
    res = last_json(cli("export", "--checkpoint", str(ckpt), "--format", "onnx", "--out", str(tmp_path / "enc.onnx")))
    assert res["feature_dim"] == width and res["max_abs_diff"] < 1e-4
    meta = json.loads((tmp_path / "enc.onnx.json").read_text())
    assert meta["arch"] == arch and meta["image_size"] == 32
    model = restore.open_checkpoint(ckpt).model.eval()
    x = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(3))  # another batch size than traced
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"images": x.numpy()})[0])
    with torch.no_grad():
        torch.testing.assert_close(got, model.encode(x), atol=1e-4, rtol=1e-4)

    pytest.importorskip("safetensors")
    from safetensors.torch import load_file

    res = last_json(
        cli("export", "--checkpoint", str(ckpt), "--format", "safetensors", "--out", str(tmp_path / "enc.safetensors"))
    )
    state = load_file(str(tmp_path / "enc.safetensors"))
    assert state.keys() == model.encoder.state_dict().keys()
