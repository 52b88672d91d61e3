"""JPEG decoding on the GPU: loader workers read bytes, the device decodes, crops and resizes in batches.

At ImageNet size the CPU decode is the bottleneck of a GPU run (two cores decode a few hundred 224 px
images a second). With ``decode=gpu`` the shard workers (``shards.py``) send the encoded
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

Ordering against the training stream. nvJPEG has been reported to write its output buffers on its own
schedule, not after the work already queued on the caller's stream (pytorch/vision#9606,
meta-pytorch/torchcodec#1634): memory that step t freed while its backward kernels still read it can
be handed to the decoder by the caching allocator and overwritten. Every decode here therefore runs on
a side stream of its own (:func:`decode_stream`), whose allocations come from a separate pool, so no
block the training stream may still read is ever handed to the decoder; the cropped views are
allocated there too, the training stream waits for the side stream before reading them, and
``record_stream`` keeps their memory from being reused on the side stream until that read is done.

Cropping is batched: the decoded images of a chunk are zero-padded to a common size once, and every
view's crop + resize + flip is two batched matrix products (``augment.crop_resize``, whose weights are
zero outside the crop box, so the padding never contributes): a few kernels per chunk and one copy
per image, instead of half a dozen kernels per image and view.

``decode``: ``auto`` (the CPU until a GPU run has proved the ordering above under load; see
benchmarks/README.md), ``cpu`` or ``gpu``, set with ``--set decode=...``. ``gpu`` is refused without a
CUDA device and a decoder that really decodes (:func:`gpu_decoder_available` decodes a 1-pixel JPEG).
The CPU path stays the reference.
"""

from __future__ import annotations

import functools
import io
import warnings

import numpy as np
import torch

from fastclr.data.images import BadImage, open_rgb
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig, sample_params
from fastclr.method.augment import crop_resize as batched_crop_resize

MODES = ("auto", "cpu", "gpu")
Cropped = tuple[torch.Tensor, torch.Tensor, list[tuple[str, str]]]  # index [b], views [V, b, 3, S, S], bad
PAD_BUDGET = 256 << 20  # bytes of float32 a padded chunk of decoded images may take


@functools.cache
def _one_pixel_jpeg() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (200, 100, 50)).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@functools.cache
def gpu_decoder_available() -> bool:
    """Whether torchvision decodes JPEGs on the CUDA device here: a real 1-pixel JPEG is decoded once.

    A torchvision built without nvJPEG imports fine and fails only at the first decode; that failure
    is reported here once, with a warning, and the loader decodes on the CPU.
    """
    if not torch.cuda.is_available():
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg

            data = torch.frombuffer(bytearray(_one_pixel_jpeg()), dtype=torch.uint8)
            with torch.cuda.stream(decode_stream(torch.device("cuda"))):
                out = decode_jpeg(data, mode=ImageReadMode.RGB, device="cuda")
            ok = tuple(out.shape) == (3, 1, 1) and abs(int(out[0, 0, 0]) - 200) <= 8
    except Exception as e:  # noqa: BLE001 (any failure of the probe means no GPU decoder, said once)
        warnings.warn(f"torchvision cannot decode JPEGs on the GPU here ({e}); decoding on the CPU", stacklevel=2)
        return False
    if not ok:
        warnings.warn(
            "torchvision's GPU JPEG decoder gave wrong pixels for a 1-pixel JPEG; decoding on the CPU", stacklevel=2
        )
    return ok


@functools.cache
def decode_stream(device: torch.device) -> torch.cuda.Stream:
    """The side stream every GPU decode of ``device`` runs on (one per device, made once)."""
    return torch.cuda.Stream(device)


def decode_mode(setting: str, device: torch.device, available: bool | None = None) -> str:
    """``cpu`` or ``gpu``: where the shard loader decodes JPEGs (``available``: overrides the probe, for tests).

    ``auto`` is the CPU: the GPU decoder's ordering against the training stream (module docstring) is
    guarded here but not yet proved under load on a GPU, and the CPU path is the reference.

    Raises:
        UserError: an unknown setting, or ``gpu`` without a CUDA device and decoder.
    """
    if setting not in MODES:
        raise UserError(f"--set decode={setting}: use one of {', '.join(MODES)}")
    if setting != "gpu":
        return "cpu"
    if device.type != "cuda" or not (gpu_decoder_available() if available is None else available):
        raise UserError(
            f"--set decode=gpu: needs a CUDA device and torchvision's GPU JPEG decoder (device is {device}); "
            "use --set decode=cpu"
        )
    return "gpu"


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


def chunks(shapes: list[tuple[int, int]], budget: int = PAD_BUDGET) -> list[tuple[int, int]]:
    """Consecutive [start, end) ranges of images whose zero-padded float32 batch fits ``budget`` bytes."""
    out, start, hmax, wmax = [], 0, 0, 0
    for k, (h, w) in enumerate(shapes):
        nh, nw = max(hmax, h), max(wmax, w)
        if k > start and (k + 1 - start) * 3 * nh * nw * 4 > budget:
            out.append((start, k))
            start, nh, nw = k, h, w
        hmax, wmax = nh, nw
    return [*out, (start, len(shapes))] if shapes else out


def padded(images: list[torch.Tensor]) -> torch.Tensor:
    """uint8 [3, H_i, W_i] images -> float32 [n, 3, max H, max W], zero beyond each image."""
    h = max(im.shape[1] for im in images)
    w = max(im.shape[2] for im in images)
    out = torch.zeros((len(images), 3, h, w), dtype=torch.float32, device=images[0].device)
    for i, im in enumerate(images):
        out[i, :, : im.shape[1], : im.shape[2]] = im  # one copy (and cast) per image
    return out


def decode_crop_views(
    raw: list[torch.Tensor],
    names: list[str],
    index: torch.Tensor,
    device: torch.device,
    *,
    seed: int,
    epoch: int,
    views: int,
    cfg: AugmentConfig,
) -> Cropped:
    """Decode encoded images on ``device`` and cut every view's random resized crop + flip there.

    On CUDA the decode and the crops run on :func:`decode_stream`, ordered before the current stream's
    next use of the views (module docstring).

    Args:
        raw: b uint8 [L_i] encoded images (CPU); names: their ids (for the bad-file report).
        index: int64 [b] sample indices keying the draws.
    Returns:
        (index [b] after bad members were replaced by the next good one, uint8 [V, b, 3, S, S], bad).
    """
    work = functools.partial(_crop_views, raw, names, index, device, seed, epoch, views, cfg)
    if device.type != "cuda":
        return work()
    consumer = torch.cuda.current_stream(device)
    side = decode_stream(device)
    with torch.cuda.stream(side):
        index, out, bad = work()
    consumer.wait_stream(side)  # the views are complete before the training stream reads them
    out.record_stream(consumer)  # and their memory is not reused on the side stream before that read ends
    return index, out, bad


def _crop_views(raw: list[torch.Tensor], names: list[str], index: torch.Tensor, device: torch.device, seed: int,
                epoch: int, views: int, cfg: AugmentConfig) -> Cropped:  # fmt: skip
    """:func:`decode_crop_views` on the current stream."""
    images, bad = _decode_all(raw, names, device)
    good = [k for k, im in enumerate(images) if im is not None]
    if not good:
        raise UserError(f"no member of the batch from {names[0]} on could be decoded; are the shards readable?")
    pick = [k if images[k] is not None else next((g for g in good if g > k), good[0]) for k in range(len(images))]
    index = index[pick]
    images = [images[k] for k in pick]
    shapes = [(int(im.shape[1]), int(im.shape[2])) for im in images]
    h = torch.tensor([s[0] for s in shapes], dtype=torch.float32)
    w = torch.tensor([s[1] for s in shapes], dtype=torch.float32)
    params = [sample_params(index, h, w, seed=seed, epoch=epoch, view=v, cfg=cfg) for v in range(views)]
    s = cfg.size
    out = torch.empty((views, len(images), 3, s, s), dtype=torch.uint8, device=device)
    for a, b in chunks(shapes):
        x = padded(images[a:b])
        for v, p in enumerate(params):
            part = {k: t[a:b].to(device, non_blocking=True) for k, t in p.items() if k in _CROP_KEYS}
            out[v, a:b] = batched_crop_resize(x, part, s).round_().clamp_(0, 255)
    return index, out, bad


_CROP_KEYS = ("top", "left", "crop_h", "crop_w", "flip")
