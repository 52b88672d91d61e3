"""Text export: the ONNX graph equals PyTorch on tokenizer inputs; the tokenizer files travel with it."""

from __future__ import annotations

import json

import pytest
import torch

from fastclr.errors import UserError
from fastclr.eval.text_export import export_text
from fastclr.method.text_encoder import build_text_encoder


def test_onnx_matches_pytorch_on_new_inputs(tiny_arch, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    enc, d = build_text_encoder(tiny_arch)
    result = export_text(enc, tiny_arch, 16, "onnx", tmp_path / "enc.onnx")
    assert result["max_abs_diff"] <= 1e-4 and (tmp_path / "tokenizer.json").is_file()
    assert json.loads((tmp_path / "enc.onnx.json").read_text())["pooling"] == "mean"
    # other batch size and length than the export's sample, through the saved tokenizer
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tmp_path))
    batch = tok(
        ["a dog", "two people walk along the beach in the park", "a cat", "the man"], padding=True, return_tensors="np"
    )
    session = ort.InferenceSession(str(tmp_path / "enc.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(
        None,
        {"input_ids": batch["input_ids"].astype("int64"), "attention_mask": batch["attention_mask"].astype("int64")},
    )[0]
    with torch.no_grad():
        ref = enc.forward_tokens(
            torch.from_numpy(batch["input_ids"]).long(), torch.from_numpy(batch["attention_mask"]).long()
        )
    assert got.shape == (4, d) and float((torch.from_numpy(got) - ref).abs().max()) < 1e-4


def test_safetensors_folder_loads_with_transformers(tiny_arch, tmp_path):
    from transformers import AutoModel

    enc, _ = build_text_encoder(tiny_arch)
    export_text(enc, tiny_arch, 16, "safetensors", tmp_path / "hf")
    back = AutoModel.from_pretrained(str(tmp_path / "hf"))
    assert all(torch.equal(v, back.state_dict()[k]) for k, v in enc.backbone.state_dict().items())
    with pytest.raises(UserError, match="onnx or safetensors"):
        export_text(enc, tiny_arch, 16, "torchvision", tmp_path / "x.pt")
