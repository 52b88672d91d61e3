"""Trained encoders from files: any fastclr checkpoint or export, loaded safely, ready for inference.

A pretraining checkpoint (``OUT/checkpoints/last.pt``), a fine-tuned or distilled one
(``finetuned.pt``, ``student.pt``) is read by :func:`fastclr.train.restore.open_checkpoint`
(``weights_only=True``: a crafted file cannot run code; every key checked). An export of
``fastclr export`` (``--format safetensors`` or ``torchvision``) is rebuilt from its side file
``FILE.json`` (or the safetensors metadata) and read by :func:`fastclr.train.weights.init_encoder`
(keys and shapes checked exactly). The encoder's input is the evaluation view (resize, centre crop:
:func:`fastclr.method.augment.eval_view`), which :class:`fastclr.data.preprocess.Preprocess` makes from images.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from fastclr.config import is_text
from fastclr.data.preprocess import Preprocess
from fastclr.errors import UserError
from fastclr.method.encoder import build_encoder
from fastclr.method.model import SimCLR
from fastclr.train import restore
from fastclr.train.weights import init_encoder


class Encoder(nn.Module):
    """A trained encoder f for inference: ``encoder(x) -> h``, plus what it needs to be used alone.

    Attributes:
        backbone: the network f (a torchvision / fastclr module with its classifier removed);
            ``backbone.state_dict()`` is the plain encoder state dict.
        head: the projection head g when the file holds one (checkpoints), else None (exports).
        preprocess: images -> input, as evaluation makes it (:class:`fastclr.data.preprocess.Preprocess`).
        image_size: S, the side of the input images.
        feature_dim: d, the width of h.
        precision: what :func:`fastclr.embed` computes in: the checkpoint's setting ("auto": bf16 where the
            device supports it), float32 for an export; assign "fp32" for full precision.
        source: the file it was loaded from.
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        image_size: int,
        head: nn.Module | None = None,
        precision: str = "auto",
        source: str = "",
    ):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.feature_dim = int(feature_dim)
        self.image_size = int(image_size)
        self.preprocess = Preprocess(image_size)
        self.precision = precision
        self.source = source

    @classmethod
    def of(cls, model: SimCLR, image_size: int, precision: str = "auto", source: str = "") -> Encoder:
        """The encoder (and head) of a SimCLR network, e.g. one trained in your own loop; shares its weights."""
        return cls(model.encoder, model.feature_dim, image_size, model.head, precision, source)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """h = f(x): float [N, 3, S, S] (the output of ``preprocess``) -> [N, d]."""
        return self.backbone(x)

    def project(self, h: torch.Tensor) -> torch.Tensor:
        """z = g(h): [N, d] -> [N, proj_dim]; UserError for an export, which has no head."""
        if self.head is None:
            raise UserError(f"{self.source or 'this encoder'}: an export holds no projection head; load the checkpoint")
        return self.head(h.float())


def load_model(path: str | Path, device: torch.device | str = "cpu") -> SimCLR:
    """The whole SimCLR network (encoder f and head g) of a fastclr checkpoint, in eval mode.

    Args:
        path: ``OUT/checkpoints/last.pt`` of a pretraining run, or the ``finetuned.pt`` /
            ``student.pt`` of fine-tuning and distillation (their encoder and head).
        device: where the weights go.
    Returns:
        :class:`fastclr.SimCLR`: ``encode(x) -> h`` [N, d], ``project(h) -> z`` [N, proj_dim].
    Raises:
        fastclr.errors.UserError: not a fastclr checkpoint, damaged, or holding pickled code (never run).
    """
    return restore.open_checkpoint(path, device).model.eval()


def load_encoder(path: str | Path, device: torch.device | str = "cpu") -> Encoder:
    """The encoder of any fastclr checkpoint or export, in eval mode, loaded without running pickled code.

    Args:
        path: a checkpoint (``last.pt``, ``finetuned.pt``, ``student.pt``) or an export of
            ``fastclr export`` (``.safetensors``, or a torchvision ``.pt`` with its ``FILE.json``).
        device: where the weights go.
    Returns:
        :class:`Encoder`: ``encoder(encoder.preprocess(images))`` is h, float [N, d], exactly the
        features ``fastclr embed`` computes (up to the precision in use).
    Raises:
        fastclr.errors.UserError: a file that is none of those, damaged, or holding pickled code.
    """
    path = Path(path)
    side = Path(f"{path}.json")
    if path.suffix == ".safetensors":
        encoder = _from_export(path, _safetensors_meta(path))
    elif path.suffix in (".onnx", ".ts", ".torchscript"):
        raise UserError(f"{path}: load ONNX files with onnxruntime and TorchScript with torch.jit.load")
    elif side.is_file() and path.is_file():
        encoder = _from_export(path, json.loads(side.read_text()))
    else:
        restored = restore.open_checkpoint(path)
        cfg = restored.cfg
        if is_text(cfg):
            raise UserError(f"{path}: a text encoder; use fastclr.load_model(path) (encode takes token ids)")
        encoder = Encoder.of(restored.model, cfg.image_size, cfg.precision, str(path))
    return encoder.to(device).eval()


def _safetensors_meta(path: Path) -> dict:
    """The export's description stored in the file's metadata (values JSON-encoded)."""
    try:
        from safetensors import safe_open
    except ImportError:
        raise UserError(f"{path}: reading .safetensors needs safetensors: pip install 'fastclr[safetensors]'") from None
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        with safe_open(str(path), "pt") as f:
            raw = f.metadata() or {}
    except Exception as e:  # safetensors raises its own error types for a damaged header
        raise UserError(f"{path}: not a valid safetensors file ({str(e).splitlines()[0][:120]})") from None
    return {k: json.loads(v) for k, v in raw.items()}


def _from_export(path: Path, meta: dict) -> Encoder:
    """Rebuild the exported architecture and copy the file's weights in (keys checked exactly)."""
    missing = [k for k in ("arch", "cifar_stem", "image_size") if k not in meta]
    if missing:
        raise UserError(f"{path}: the export's description lacks {missing}; re-export with `fastclr export`")
    backbone, width = build_encoder(meta["arch"], bool(meta["cifar_stem"]))
    init_encoder(backbone, path)
    return Encoder(backbone, width, int(meta["image_size"]), precision="fp32", source=str(path))  # as checked on export
