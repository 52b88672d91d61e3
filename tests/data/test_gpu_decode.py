"""JPEG decoding on the device: the dispatch everywhere, the same crops as the CPU path for the same keys."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fastclr import config
from fastclr.data import gpu_decode
from fastclr.data.stream import crop_views
from fastclr.errors import UserError
from fastclr.train.step import augment_config

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize(
    "setting,device,available,expected",
    [
        ("auto", CPU, True, "cpu"),
        ("auto", CUDA, True, "gpu"),
        ("auto", CUDA, False, "cpu"),
        ("cpu", CUDA, True, "cpu"),
        ("gpu", CUDA, True, "gpu"),
    ],
)
def test_resolve(setting, device, available, expected):
    assert gpu_decode.resolve(setting, device, available=available) == expected


@pytest.mark.parametrize("setting,device,available", [("gpu", CPU, True), ("gpu", CUDA, False), ("nvjpeg", CPU, True)])
def test_resolve_refuses(setting, device, available):
    with pytest.raises(UserError, match="decode"):
        gpu_decode.resolve(setting, device, available=available)


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
    got_index, got, bad = gpu_decode.crop_views(
        tensors, [str(i) for i in range(6)], index, device, seed=5, epoch=2, views=2, cfg=cfg
    )
    assert bad == [] and torch.equal(got_index, index) and got.shape == ref.shape
    diff = (got.cpu().float() - ref.float()).abs()
    assert diff.mean() < tolerance, diff.mean()
    return diff


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
    index, views, bad = gpu_decode.crop_views(tensors, names, torch.arange(3), CPU, seed=0, epoch=0, views=2, cfg=cfg)
    assert index.tolist() == [0, 2, 2] and [p for p, _ in bad] == ["b"] and views.shape == (2, 3, 3, 8, 8)


@pytest.mark.skipif(not gpu_decode.gpu_decoder_available(), reason="needs a CUDA device")
def test_gpu_crops_match_the_cpu_path():
    """nvJPEG rounds its IDCT differently from libjpeg: a small mean difference on the same boxes."""
    same_crops(CUDA, tolerance=2.0)
