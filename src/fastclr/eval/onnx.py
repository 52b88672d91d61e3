"""ONNX export shared by the image and text encoders: write the graph, then check it against PyTorch.

The TorchScript-based exporter (``dynamo=False``: no onnxscript dependency) at opset 17, with the
named inputs' dimensions dynamic; onnxruntime, where installed, runs the file on the same inputs.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from fastclr.errors import UserError

TOLERANCE = 1e-4  # max abs difference accepted between an export and PyTorch (float32)
NOT_CHECKED = "not checked: onnxruntime is not installed (pip install 'fastclr[onnx]')"


def write(module: nn.Module, inputs: dict[str, torch.Tensor], out: Path, dynamic: dict[str, dict[int, str]]) -> None:
    """``module(*inputs.values())`` as an ONNX graph at ``out``: inputs named by ``inputs``' keys, output ``h``."""
    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError:
        raise UserError("--format onnx needs the onnx package: pip install 'fastclr[onnx]'") from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            tuple(inputs.values()),
            str(out),
            dynamo=False,
            input_names=list(inputs),
            output_names=["h"],
            dynamic_axes={**dynamic, "h": {0: "batch"}},
            opset_version=17,
        )


def verified(out: Path, inputs: dict[str, torch.Tensor], reference: torch.Tensor) -> float | None:
    """The max abs difference of onnxruntime's h from ``reference`` (RuntimeError above TOLERANCE); None
    without onnxruntime."""
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]
    diff = float((torch.from_numpy(got).float() - reference.float()).abs().max())
    if diff > TOLERANCE:
        raise RuntimeError(f"onnx export differs from PyTorch by {diff:.3g} (> {TOLERANCE})")
    return diff
