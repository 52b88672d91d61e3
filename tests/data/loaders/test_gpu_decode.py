"""JPEG decoding on the device: the dispatch everywhere, the same crops as the CPU path for the same keys."""

import io
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from fastclr import config
from fastclr.data.loaders import gpu_decode
from fastclr.data.loaders.files import crop_views
from fastclr.errors import UserError
from fastclr.train.step import augment_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    "setting,device,available,expected",
    [
        ("auto", CPU, True, "cpu"),
        ("auto", CUDA, True, "cpu"),  # until a GPU run proves the decoder's ordering under load
        ("auto", CUDA, False, "cpu"),
        ("cpu", CUDA, True, "cpu"),
        ("gpu", CUDA, True, "gpu"),
    ],
)
def test_resolve(setting, device, available, expected):
    assert gpu_decode.decode_mode(setting, device, available=available) == expected


@pytest.mark.parametrize("setting,device,available", [("gpu", CPU, True), ("gpu", CUDA, False), ("nvjpeg", CPU, True)])
def test_resolve_refuses(setting, device, available):
    with pytest.raises(UserError, match="decode"):
        gpu_decode.decode_mode(setting, device, available=available)


def test_config_accepts_only_known_modes():
    config.validate(config.Config(decode="gpu"))
    with pytest.raises(UserError, match="decode"):
        config.validate(config.Config(decode="fast"))


def smooth_jpegs(n: int) -> tuple[list[bytes], list[Image.Image]]:
    """Photo-like (smooth) JPEGs of different sizes, and the same decoded by PIL."""
    raw, images = [], []
    for i in range(n):
        h, w = 60 + 7 * i, 90 - 5 * i
        y, x = np.mgrid[0:h, 0:w]
        px = np.stack([(x * 255 / w), (y * 255 / h), ((x + y + 40 * i) % 255)], -1).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(px).save(buf, "JPEG", quality=95)
        raw.append(buf.getvalue())
        images.append(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    return raw, images


def same_crops(device: torch.device, tolerance: float):
    cfg = augment_config(config.Config(image_size=16))
    raw, images = smooth_jpegs(6)
    index = torch.arange(10, 16)
    ref = crop_views(images, index, seed=5, epoch=2, views=2, cfg=cfg)  # the CPU reference: PIL
    tensors = [torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raw]
    got_index, got, bad = gpu_decode.decode_crop_views(
        tensors, [str(i) for i in range(6)], index, device, seed=5, epoch=2, views=2, cfg=cfg
    )
    assert bad == [] and torch.equal(got_index, index) and got.shape == ref.shape
    diff = (got.cpu().float() - ref.float()).abs()
    assert diff.mean() < tolerance, diff.mean()
    return diff


def per_image_crops(raw, index, cfg, views):
    """The per-image reference of the batched crop: decode, cut the box, resize with F.interpolate, flip."""
    from torchvision.io import decode_jpeg

    from fastclr.method.augment import sample_params

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        images = [decode_jpeg(torch.frombuffer(bytearray(r), dtype=torch.uint8)) for r in raw]
    h = torch.tensor([float(im.shape[1]) for im in images])
    w = torch.tensor([float(im.shape[2]) for im in images])
    out = torch.empty((views, len(images), 3, cfg.size, cfg.size), dtype=torch.uint8)
    for v in range(views):
        p = sample_params(index, h, w, seed=5, epoch=2, view=v, cfg=cfg)
        for i, im in enumerate(images):
            t, lft, ch, cw = (int(p[k][i]) for k in ("top", "left", "crop_h", "crop_w"))
            crop = im[:, t : t + ch, lft : lft + cw].float()[None]
            x = torch.nn.functional.interpolate(crop, size=(cfg.size,) * 2, mode="bilinear", antialias=True)[0]
            out[v, i] = (x.flip(-1) if bool(p["flip"][i]) else x).round().clamp(0, 255).to(torch.uint8)
    return out


@pytest.mark.parametrize("budget", [gpu_decode.PAD_BUDGET, 1])
def test_batched_crops_equal_per_image_crops(monkeypatch, budget):
    """Zero-padding a chunk to its largest image and resampling with matrices cuts the same pixels as
    cropping each image alone (one image per chunk when the budget is tiny)."""
    monkeypatch.setattr(gpu_decode, "PAD_BUDGET", budget)
    cfg = augment_config(config.Config(image_size=16))
    raw, _ = smooth_jpegs(6)
    index = torch.arange(10, 16)
    tensors = [torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raw]
    _, got, _ = gpu_decode.decode_crop_views(tensors, list("abcdef"), index, CPU, seed=5, epoch=2, views=2, cfg=cfg)
    ref = per_image_crops(raw, index, cfg, views=2)
    assert (got.int() - ref.int()).abs().max() <= 1  # float rounding of two resampling orders


def test_chunks_cover_every_image_within_the_budget():
    shapes = [(100, 80), (60, 200), (300, 300), (10, 10), (120, 90)]
    for budget in (1, 3 * 4 * 300 * 300, 3 * 4 * 300 * 300 * 2, 1 << 30):
        ranges = gpu_decode.chunks(shapes, budget)
        assert [a for a, _ in ranges] == [0] + [b for _, b in ranges[:-1]] and ranges[-1][1] == len(shapes)
        for a, b in ranges:  # a chunk over budget holds a single image
            hw = max(s[0] for s in shapes[a:b]) * max(s[1] for s in shapes[a:b])
            assert b - a == 1 or (b - a) * 3 * 4 * hw <= budget
    assert gpu_decode.chunks([], 1) == []


def test_device_crops_match_the_cpu_path_on_cpu():
    """The device path's crop boxes and resize, run here on the CPU decoder: within resampling rounding."""
    diff = same_crops(CPU, tolerance=1.0)
    assert diff.max() <= 8


def test_bad_member_replaced_and_reported():
    cfg = augment_config(config.Config(image_size=8))
    raw, _ = smooth_jpegs(3)
    raw[1] = raw[1][: len(raw[1]) // 3]
    tensors = [torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raw]
    names = ["a", "b", "c"]
    index, views, bad = gpu_decode.decode_crop_views(
        tensors, names, torch.arange(3), CPU, seed=0, epoch=0, views=2, cfg=cfg
    )
    assert index.tolist() == [0, 2, 2] and [p for p, _ in bad] == ["b"] and views.shape == (2, 3, 3, 8, 8)


@pytest.mark.skipif(not gpu_decode.gpu_decoder_available(), reason="needs a CUDA device")
def test_gpu_crops_match_the_cpu_path():
    """nvJPEG rounds its IDCT differently from libjpeg: a small mean difference on the same boxes."""
    same_crops(CUDA, tolerance=2.0)


@pytest.mark.cuda
@pytest.mark.skipif(not gpu_decode.gpu_decoder_available(), reason="needs a CUDA device and GPU JPEG decoder")
def test_gpu_decode_under_load_never_overwrites_queued_work():
    """The race of pytorch/vision#9606: tensors freed while the current stream still has queued kernels
    reading them must not be handed to the decoder. Queue a long stall then reads of freed tensors,
    decode while they are pending, and compare every read with its known sum; the decoded crops must
    also match the CPU path."""
    cfg = augment_config(config.Config(image_size=32))
    raw, _ = smooth_jpegs(12)
    tensors = [torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raw]
    index, names = torch.arange(12), [str(i) for i in range(12)]
    _, ref, _ = gpu_decode.decode_crop_views(tensors, names, index, CPU, seed=1, epoch=0, views=2, cfg=cfg)
    corrupted = 0
    for _ in range(20):
        big = torch.randn(4096, 4096, device=CUDA)
        victims = [torch.full((256, 256), float(k + 1), device=CUDA) for k in range(8)]
        for _ in range(30):  # keep the stream busy: the reads below are queued behind this
            big = big @ big.clamp(-1, 1) / 4096
        sums = [v.sum() for v in victims]  # queued reads of the victims
        del victims  # freed on the current stream while the reads are still queued
        _, got, _ = gpu_decode.decode_crop_views(tensors, names, index, CUDA, seed=1, epoch=0, views=2, cfg=cfg)
        expected = [float((k + 1) * 256 * 256) for k in range(8)]
        corrupted += sum(abs(float(s) - e) > 1e-3 * e for s, e in zip(sums, expected))
        assert (got.cpu().float() - ref.float()).abs().mean() < 2.0
    assert corrupted == 0
