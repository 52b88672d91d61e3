"""Export the encoder f alone (the projection head is dropped, as after pretraining in the paper).

Formats:

* ``safetensors``: the encoder's state dict (torchvision key names) with metadata; no code.
* ``torchvision``: a plain state dict that loads into the torchvision constructor with
  ``strict=True``. The constructor has a classifier ``fc`` (1000 outputs) that a SimCLR encoder
  does not, so the file carries an honest placeholder: ``fc.weight`` and ``fc.bias`` all zeros
  (every logit is 0) unless the checkpoint is a fine-tuned classifier on h, whose trained layer
  is exported instead (then build with ``num_classes`` from the side file). To get h, set
  ``model.fc = torch.nn.Identity()`` after loading. A CIFAR-stem encoder needs the stem adapted
  before loading, exactly as :func:`torchvision_model` does::

      m = torchvision.models.resnet18(num_classes=1000)
      m.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)   # 3x3 stride 1
      m.maxpool = torch.nn.Identity()                          # no max-pool
      m.load_state_dict(torch.load(FILE, weights_only=True), strict=True)

  A timm model's safetensors file loads into ``timm.create_model(NAME, num_classes=0, **arch_kwargs)``.
* ``onnx``: the encoder as a graph (input ``images`` [N, 3, S, S], output ``h`` [N, d], dynamic
  batch), checked against PyTorch with onnxruntime when it is installed.
* ``torchscript``: a traced encoder, checked against PyTorch.

Every export writes ``FILE.json`` next to it: architecture, stem, input size and the input
normalisation (RGB in [0, 1], then the ImageNet mean and std of :mod:`fastclr.method.augment`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torchvision
from torch import nn

from fastclr import config
from fastclr.errors import UserError
from fastclr.eval import onnx
from fastclr.method.augment import MEAN, STD
from fastclr.method.model import SimCLR

FORMATS = ("safetensors", "torchvision", "onnx", "torchscript")
TOLERANCE = onnx.TOLERANCE  # max abs difference accepted between any export and PyTorch (float32)
Probe = tuple[torch.Tensor, torch.Tensor]  # a fixed input batch and the PyTorch encoder's h on it


def encoder_state(model: SimCLR) -> dict[str, torch.Tensor]:
    """The encoder's tensors, contiguous copies on the CPU (safetensors refuses shared storage)."""
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.encoder.state_dict().items()}


def torchvision_model(arch: str, cifar_stem: bool, num_classes: int = 1000) -> nn.Module:
    """The plain torchvision constructor, with the CIFAR stem adapted: what a torchvision export loads into."""
    model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
    if cifar_stem:
        model.conv1 = nn.Conv2d(3, model.conv1.out_channels, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    return model


def _verified(got: torch.Tensor, reference: torch.Tensor, fmt: str) -> float:
    """The max abs difference of an export's h from PyTorch's; raises above TOLERANCE (nothing is kept then)."""
    diff = float((got.float() - reference.float()).abs().max())
    if diff > TOLERANCE:
        raise RuntimeError(f"{fmt} export differs from PyTorch by {diff:.3g} (> {TOLERANCE})")
    return diff


def export(
    model: SimCLR,
    arch: str,
    cifar_stem: bool,
    image_size: int,
    fmt: str,
    out: str | Path,
    fc: nn.Linear | None = None,
    arch_kwargs: dict | None = None,
) -> dict:
    """Write the encoder of ``model`` to ``out`` in format ``fmt``; returns the result dict.

    Every backbone exports to safetensors, ONNX and TorchScript (timm models, VGG and the wide ResNets
    included); the torchvision format needs a torchvision constructor with an ``fc`` classifier.

    Args:
        fc: a trained classifier on h to export with the torchvision format (else the zero placeholder).
        arch_kwargs: the constructor's keyword arguments (e.g. a ViT's img_size), recorded in ``FILE.json``.
    Returns:
        {"out", "format", "feature_dim"} plus "max_abs_diff" where the export was checked numerically.
    """
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: use one of {', '.join(FORMATS)}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    x = torch.randn(4, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model.encoder(x)
    meta = {
        "format": fmt,
        "arch": arch,
        "cifar_stem": cifar_stem,
        "arch_kwargs": arch_kwargs or {},
        "image_size": image_size,
        "feature_dim": model.feature_dim,
        "input": f"float32 [N, 3, {image_size}, {image_size}], RGB scaled to [0, 1], then (x - mean) / std",
        "mean": list(MEAN),
        "std": list(STD),
    }
    diff: float | None = None
    if fmt == "safetensors":
        _write_safetensors(model, meta, out)
    elif fmt == "torchvision":
        diff = _write_torchvision(model, arch, cifar_stem, fc, (x, reference), meta, out)
    elif fmt == "onnx":
        diff = _write_onnx(model.encoder, (x, reference), meta, out)
    else:
        diff = _write_torchscript(model.encoder, (x, reference), out)
    result: dict = {"out": str(out), "format": fmt, "feature_dim": model.feature_dim}
    if diff is not None:
        result["max_abs_diff"] = diff
    Path(f"{out}.json").write_text(json.dumps(meta, indent=2))
    return result


def _write_safetensors(model: SimCLR, meta: dict, out: Path) -> None:
    """The encoder's tensors with ``meta`` as string metadata; nothing to run, so nothing to check."""
    try:
        from safetensors.torch import save_file
    except ImportError:
        raise UserError(
            "--format safetensors needs the safetensors package: pip install 'fastclr[safetensors]'"
        ) from None
    save_file(encoder_state(model), str(out), metadata={k: json.dumps(v) for k, v in meta.items()})


def _write_torchvision(
    model: SimCLR, arch: str, cifar_stem: bool, fc: nn.Linear | None, probe: Probe, meta: dict, out: Path
) -> float:
    """A strict torchvision state dict (``fc`` or the zero placeholder), written once it reloads and matches."""
    try:
        plain = torchvision_model(arch, cifar_stem)
    except (ValueError, KeyError):
        plain = None
    if not isinstance(getattr(plain, "fc", None), nn.Linear):
        raise UserError(
            f"--format torchvision: {arch} has no torchvision constructor with an fc classifier; use --format "
            "safetensors"
        )
    state = encoder_state(model)
    if fc is None:
        state["fc.weight"] = torch.zeros(1000, model.feature_dim)
        state["fc.bias"] = torch.zeros(1000)
        meta["fc"] = "placeholder: zeros, 1000 outputs; set model.fc = torch.nn.Identity() to get h"
    else:
        state["fc.weight"] = fc.weight.detach().cpu().contiguous().clone()
        state["fc.bias"] = fc.bias.detach().cpu().contiguous().clone()
        meta["fc"] = "the fine-tuned classifier on h"
    meta["num_classes"] = state["fc.weight"].shape[0]
    check = torchvision_model(arch, cifar_stem, meta["num_classes"])
    check.load_state_dict(state, strict=True)
    check.fc = nn.Identity()
    with torch.no_grad():
        diff = _verified(check.eval()(probe[0]), probe[1], "torchvision")
    torch.save(state, out)
    return diff


def _write_onnx(enc: nn.Module, probe: Probe, meta: dict, out: Path) -> float | None:
    """The ONNX graph (batch dimension dynamic), checked with onnxruntime where installed (else None, noted in
    ``meta``)."""
    inputs = {"images": probe[0]}
    onnx.write(enc, inputs, out, {"images": {0: "batch"}})
    diff = onnx.verified(out, inputs, probe[1])
    if diff is None:
        meta["checked"] = onnx.NOT_CHECKED
    return diff


def _write_torchscript(enc: nn.Module, probe: Probe, out: Path) -> float:
    """A traced encoder, written once its h matches PyTorch's."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated upstream but still loads everywhere
        traced = torch.jit.trace(enc, probe[0])
    with torch.no_grad():
        diff = _verified(traced(probe[0]), probe[1], "torchscript")
    traced.save(str(out))
    return diff


def command(checkpoint: str, fmt: str, out: str | Path) -> dict:
    """``fastclr export``: the encoder of a checkpoint; a fine-tuned classifier on h exports with its fc.

    Every export is checked numerically against PyTorch; FILE.json beside it describes the input.
    """
    from fastclr.eval.finetune import load_classifier
    from fastclr.train import restore

    restored = restore.open_checkpoint(checkpoint)
    cfg, state, fc = restored.cfg, restored.state, None
    if config.is_text(cfg):
        from fastclr.eval.text_export import export_text
        from fastclr.method.text_encoder import TextEncoder

        assert isinstance(restored.model.encoder, TextEncoder)  # a text config builds one
        return export_text(restored.model.encoder, cfg.arch, cfg.max_length, fmt, out)
    if state.get("kind") == "classifier" and int(state.get("from_head_layer", 0)) == 0:
        fc = load_classifier(checkpoint)[0].fc
    return export(
        restored.model, cfg.arch, cfg.cifar_stem, cfg.image_size, fmt, out, fc=fc, arch_kwargs=config.arch_kwargs(cfg)
    )
