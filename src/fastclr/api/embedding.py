"""Embeddings from Python: h (or z) of a data spec, a list of files, a tensor or PIL images.

The rows are those of ``fastclr embed`` for the same images: the evaluation view of
:class:`fastclr.data.preprocess.Preprocess`, then :func:`fastclr.eval.features.extract` (the
precision the checkpoint was trained with). Images are decoded and embedded ``batch_size`` at a
time, so memory holds one batch of pixels plus the output rows, however many images there are.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastclr import log
from fastclr.api.models import Encoder
from fastclr.data import datasets, specs
from fastclr.data.images import BadImage
from fastclr.data.preprocess import Preprocess
from fastclr.data.sets import ImageSet
from fastclr.errors import UserError
from fastclr.eval.features import extract
from fastclr.method.model import SimCLR
from fastclr.train.precision import resolve

ImageData = str | Path | torch.Tensor | Iterable[Image.Image | str | Path]
SPLITS = ("pretrain", "train", "test")


def embed(
    encoder: Encoder | SimCLR,
    data: ImageData,
    *,
    batch_size: int = 256,
    projection: bool = False,
    split: str = "pretrain",
    image_size: int | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Embeddings of every image of ``data``, in order, with their ids, on the encoder's device.

    Args:
        encoder: from :func:`fastclr.load_encoder` (or a :class:`fastclr.SimCLR` with ``image_size``).
        data: a data spec string (``"digits"``, a folder, a .csv list, ``cifar10:ROOT``, ``prepared:DIR``);
            a sequence of image files; a tensor of images uint8 [N, C, H, W]; or any iterable of PIL
            images (read lazily, ``batch_size`` at a time).
        batch_size: images decoded and embedded at a time (bounds memory).
        projection: z = g(h) [N, proj_dim] instead of h [N, d] (needs a checkpoint's head).
        split: for a spec: ``pretrain`` (every pretraining image, the default), ``train`` or ``test``.
        image_size: the input side S for a bare SimCLR network (an Encoder knows its own).
    Returns:
        (float32 array [N, d], N ids): file paths for files and folders, dataset ids for the
        standard sets, ``"0"``, ``"1"``, ... for tensors and PIL images. Files that cannot be
        decoded are skipped with a warning, so ids say which rows are which.
    """
    if batch_size < 1:
        raise UserError(f"batch_size={batch_size}: must be >= 1")
    enc = _as_encoder(encoder, image_size)
    device = next(enc.parameters()).device
    precision = resolve(enc.precision, device)
    fn = (lambda x: enc.project(enc(x).float())) if projection else enc.forward
    enc.eval()
    rows, ids = [], []
    for pixels, chunk_ids in _batches(data, enc.preprocess, batch_size, split):
        h = extract(fn, pixels, enc.image_size, device, batch_size=batch_size, precision=precision)
        rows.append(h.cpu().numpy())  # extract leaves h on the encoder's device
        ids += chunk_ids
    if not rows:
        with torch.no_grad():
            rows.append(fn(torch.zeros(2, 3, enc.image_size, enc.image_size, device=device))[:0].float().cpu().numpy())
    return np.concatenate(rows), ids


def _as_encoder(model: Encoder | SimCLR, image_size: int | None) -> Encoder:
    if isinstance(model, Encoder):
        return model
    if isinstance(model, SimCLR):
        if image_size is None:
            raise UserError("embed(SimCLR model, ...): pass image_size= (the side it was trained at)")
        return Encoder.of(model, image_size)
    raise UserError(f"embed: expected an Encoder (fastclr.load_encoder) or a SimCLR model, not {type(model).__name__}")


def _batches(
    data: ImageData, preprocess: Preprocess, batch_size: int, split: str
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """uint8 [b, 3, H, W] batches of ``data`` with their ids, in order."""
    if isinstance(data, torch.Tensor):
        images = data.unsqueeze(0) if data.dim() == 3 else data
        for lo in range(0, images.shape[0], batch_size):
            yield images[lo : lo + batch_size], [str(i) for i in range(lo, min(lo + batch_size, images.shape[0]))]
    elif isinstance(data, (str, Path)):
        yield from _spec_batches(str(data), preprocess, batch_size, split)
    else:
        yield from _item_batches(iter(data), preprocess, batch_size)


def _spec_batches(
    spec: str, preprocess: Preprocess, batch_size: int, split: str
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """A folder or list is decoded a batch at a time; the other specs are in memory (or memory-mapped) already."""
    if split not in SPLITS:
        raise UserError(f"split={split!r}: use one of {', '.join(SPLITS)}")
    kind, _ = specs.parse(spec)
    if kind in ("folder", "list"):
        train, test = datasets.listings(spec)
        listing = test if split == "test" else train
        if listing is None or (split != "pretrain" and listing.labels is None):
            raise UserError(f"split={split!r}: data set {spec!r} has no such labelled split; use split='pretrain'")
        yield from _item_batches(iter(listing.files), preprocess, batch_size)
        return
    images = getattr(datasets.load(spec, preprocess.image_size), split)
    if images is None or not isinstance(images, ImageSet):
        raise UserError(f"split={split!r}: data set {spec!r} has no such split in memory; use split='pretrain'")
    for lo in range(0, len(images), batch_size):
        yield images.images[lo : lo + batch_size], images.ids[lo : lo + batch_size]


def _item_batches(
    items: Iterator[Image.Image | str | Path], preprocess: Preprocess, batch_size: int
) -> Iterator[tuple[torch.Tensor, list[str]]]:
    """Files and PIL images decoded ``batch_size`` at a time; unreadable files skipped with a warning."""
    position = 0
    while chunk := list(islice(items, batch_size)):
        pixels, ids = [], []
        for offset, item in enumerate(chunk):
            try:
                pixels.append(preprocess.pixels([item]))
            except BadImage as e:
                log.warn(f"skipped {e.path}: {e.reason}")
                continue
            ids.append(str(position + offset) if isinstance(item, Image.Image) else str(item))
        position += len(chunk)
        if pixels:
            yield torch.cat(pixels), ids
