"""JPEG decoding on the GPU: loader workers read bytes, the device decodes, crops and resizes in batches.

At ImageNet size the CPU decode is the bottleneck of a GPU run (two cores decode a few hundred 224 px
images a second). With ``decode=gpu`` the shard workers (``shard_loader.py``) send the encoded
bytes; ``torchvision.io.decode_jpeg(device="cuda")`` (nvJPEG) decodes the batch, and the random
resized crop + flip are cut on the device with the same keyed draws as the CPU path
(``augment.sample_params`` on the full-resolution size, then a bilinear antialiased resize, as PIL's
``resize(BILINEAR)`` does), so a sample's crop box is the same on both paths and the pixels agree
within decoding tolerance (nvJPEG and libjpeg round the IDCT differently). The colour part then runs
on the device as for every tier. Members that nvJPEG cannot decode (PNG, CMYK, progressive corner
cases, broken files) are decoded on the CPU with PIL; broken ones are reported like bad files.
One difference remains: the GPU path does not apply EXIF orientation (the CPU path does), so a
photo stored rotated with an orientation tag is cropped as stored; ``prepare --format shards
--size S`` re-encodes images upright.

``decode``: ``auto`` (GPU when the device is CUDA and torchvision has a CUDA decoder, else CPU),
``cpu`` or ``gpu``, set with ``--set decode=...``. The CPU path stays the reference.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from fastclr.data.images import BadImage, open_rgb
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig, sample_params

MODES = ("auto", "cpu", "gpu")


def gpu_decoder_available() -> bool:
    """Whether torchvision can decode JPEGs on a CUDA device here."""
    if not torch.cuda.is_available():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import decode_jpeg  # noqa: F401
    except ImportError:
        return False
    return True


def resolve(setting: str, device: torch.device, available: bool | None = None) -> str:
    """``cpu`` or ``gpu``: where the shard loader decodes JPEGs (``available``: overrides the probe, for tests).

    Raises:
        UserError: an unknown setting, or ``gpu`` without a CUDA device and decoder.
    """
    if setting not in MODES:
        raise UserError(f"--set decode={setting}: use one of {', '.join(MODES)}")
    can = (device.type == "cuda") and (gpu_decoder_available() if available is None else available)
    if setting == "gpu" and not can:
        raise UserError(
            f"--set decode=gpu: needs a CUDA device and torchvision's GPU JPEG decoder (device is {device}); "
            "use --set decode=cpu"
        )
    if setting == "auto":
        return "gpu" if can else "cpu"
    return setting


def _decode_all(raw: list[torch.Tensor], names: list[str], device: torch.device) -> tuple[list, list]:
    """Each image as uint8 [3, H, W] on ``device`` (None where it cannot be decoded), and the bad ones."""
    with warnings.catch_warnings():  # torchvision >= 0.29 points to TorchCodec; its decoder still works
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_each(raw, names, device)


def _decode_each(raw: list[torch.Tensor], names: list[str], device: torch.device) -> tuple[list, list]:
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device)), []
    except (RuntimeError, ValueError):  # one member failed: find it one by one
        pass
    out: list = []
    bad = []
    for data, name in zip(raw, names):
        try:
            out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            continue
        except (RuntimeError, ValueError):
            pass
        try:  # not a baseline JPEG nvJPEG takes: PIL on the CPU (the reference decoder)
            im = open_rgb(name, data=bytes(data.numpy()))[0]
            out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).to(device))
        except BadImage as e:
            out.append(None)
            bad.append((e.path, e.reason))
    return out, bad


def crop_resize(image: torch.Tensor, box: list[int], size: int, flip: bool) -> torch.Tensor:
    """uint8 [3, H, W] -> the box (left, top, right, bottom) as uint8 [3, size, size] (bilinear, antialiased)."""
    left, top, right, bottom = box
    crop = image[:, top:bottom, left:right].float()[None]
    out = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False)[0]
    if flip:
        out = out.flip(-1)
    return out.round_().clamp_(0, 255).to(torch.uint8)


def crop_views(
    raw: list[torch.Tensor],
    names: list[str],
    index: torch.Tensor,
    device: torch.device,
    *,
    seed: int,
    epoch: int,
    views: int,
    cfg: AugmentConfig,
) -> tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]:
    """Decode encoded images on ``device`` and cut every view's random resized crop + flip there.

    Args:
        raw: b uint8 [L_i] encoded images (CPU); names: their ids (for the bad-file report).
        index: int64 [b] sample indices keying the draws.
    Returns:
        (index [b] after bad members were replaced by the next good one, uint8 [V, b, 3, S, S], bad).
    """
    images, bad = _decode_all(raw, names, device)
    good = [k for k, im in enumerate(images) if im is not None]
    if not good:
        raise UserError(f"no member of the batch from {names[0]} on could be decoded; are the shards readable?")
    pick = [k if images[k] is not None else next((g for g in good if g > k), good[0]) for k in range(len(images))]
    index = index[pick]
    images = [images[k] for k in pick]
    h = torch.tensor([im.shape[1] for im in images], dtype=torch.float32)
    w = torch.tensor([im.shape[2] for im in images], dtype=torch.float32)
    s = cfg.size
    out = torch.empty((views, len(images), 3, s, s), dtype=torch.uint8, device=device)
    for v in range(views):
        p = sample_params(index, h, w, seed=seed, epoch=epoch, view=v, cfg=cfg)
        box = torch.stack((p["left"], p["top"], p["left"] + p["crop_w"], p["top"] + p["crop_h"]), 1).long().tolist()
        flip = p["flip"].tolist()
        for i, im in enumerate(images):
            out[v, i] = crop_resize(im, box[i], s, flip[i])
    return index, out, bad
