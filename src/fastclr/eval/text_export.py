"""Export a text encoder f alone (the projection head is dropped), with its tokenizer files.

* ``onnx``: the graph of (``input_ids``, ``attention_mask``) int64 [N, T] -> ``h`` [N, d] (pooling
  included), dynamic batch and length; the inputs are what the saved tokenizer gives with
  ``padding=True`` (special tokens included). Checked against PyTorch with onnxruntime.
* ``safetensors``: the Transformer as a Hugging Face folder (``config.json`` + ``model.safetensors``),
  loadable with ``AutoModel.from_pretrained(FOLDER)``; ``out`` is that folder.

The tokenizer files are written beside the export (``OUT_DIR/tokenizer.json`` ...), and ``FILE.json``
records the pooling, the maximum length and how to build the inputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from fastclr.errors import UserError
from fastclr.eval import onnx
from fastclr.method.text_encoder import TextEncoder

FORMATS = ("onnx", "safetensors")
SAMPLE = ["A man is playing a guitar.", "Two dogs run.", "The weather is lovely today in the park."]


class _Tokens(nn.Module):
    """(input_ids, attention_mask) -> h: the exported signature."""

    def __init__(self, enc: TextEncoder):
        super().__init__()
        self.enc = enc

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.enc.forward_tokens(input_ids, attention_mask)


def _onnx(enc: TextEncoder, out: Path, ids: torch.Tensor, mask: torch.Tensor, reference: torch.Tensor) -> dict:
    """The graph of (input_ids, attention_mask) -> h, batch and length dynamic, checked with onnxruntime."""
    inputs = {"input_ids": ids, "attention_mask": mask}
    dynamic = {name: {0: "batch", 1: "length"} for name in inputs}
    # a new module trains by default, and the exporter restores that mode after
    onnx.write(_Tokens(enc).eval(), inputs, out, dynamic)
    diff = onnx.verified(out, inputs, reference)
    return {"checked": onnx.NOT_CHECKED} if diff is None else {"max_abs_diff": diff}


def export_text(enc: TextEncoder, arch: str, max_length: int, fmt: str, out: str | Path) -> dict:
    """Write text encoder ``enc`` to ``out`` in format ``fmt`` with its tokenizer; returns the result dict."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: a text encoder exports as {' or '.join(FORMATS)}")
    out = Path(out)
    enc = enc.cpu().eval()
    batch = enc.tokenizer(SAMPLE, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = batch["input_ids"].long(), batch["attention_mask"].long()
    with torch.no_grad():
        reference = enc.forward_tokens(ids, mask).float()
    folder = out if fmt == "safetensors" else out.parent
    folder.mkdir(parents=True, exist_ok=True)
    result: dict = {"out": str(out), "format": fmt, "feature_dim": enc.width}
    if fmt == "onnx":
        result.update(_onnx(enc, out, ids, mask, reference))
    else:
        getattr(enc.backbone, "save_pretrained")(str(out), safe_serialization=True)  # noqa: B009 - Transformers API
    result["tokenizer"] = [str(Path(p)) for p in enc.tokenizer.save_pretrained(str(folder))]
    meta = {
        "format": fmt,
        "arch": arch,
        "feature_dim": enc.width,
        "pooling": enc.pooling,
        "max_length": max_length,
        "input": "the tokenizer beside this file, padding=True: input_ids, attention_mask int64 [N, T]",
    }
    Path(f"{out}.json").write_text(json.dumps(meta, indent=2))
    return result
