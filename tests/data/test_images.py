"""The odd-format policy and the bad-file reasons of fastclr.data.images, on files the tests write."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from fastclr.data.images import BACKGROUND, BadImage, decode, open_rgb, to_rgb

RGB = (200, 100, 50)


def rgb_of(path):
    im, hw = open_rgb(path)
    assert im.mode == "RGB"
    return np.asarray(im), hw


def test_grayscale_png(tmp_path):
    Image.new("L", (5, 4), 77).save(tmp_path / "g.png")
    a, hw = rgb_of(tmp_path / "g.png")
    assert hw == (4, 5) and (a == 77).all()


def test_palette_gif_and_transparent_palette(tmp_path):
    im = Image.new("P", (4, 4), 1)
    im.putpalette([0, 0, 0, *RGB] + [0] * 762)
    im.save(tmp_path / "p.gif")
    a, _ = rgb_of(tmp_path / "p.gif")
    assert (a == RGB).all()
    im.info["transparency"] = 1  # colour 1 transparent: composited on the background
    im.save(tmp_path / "t.png", transparency=1)
    a, _ = rgb_of(tmp_path / "t.png")
    assert (a == BACKGROUND).all()


def test_rgba_composited_on_white(tmp_path):
    px = np.zeros((2, 2, 4), np.uint8)
    px[0, 0] = (*RGB, 255)  # opaque: kept
    px[0, 1] = (*RGB, 0)  # transparent: white
    px[1, 0] = (0, 0, 0, 128)  # half black over white: ~127
    px[1, 1] = (0, 0, 0, 255)
    Image.fromarray(px).save(tmp_path / "a.png")
    a, _ = rgb_of(tmp_path / "a.png")
    assert tuple(a[0, 0]) == RGB and tuple(a[0, 1]) == BACKGROUND and tuple(a[1, 1]) == (0, 0, 0)
    assert np.abs(a[1, 0].astype(int) - 127).max() <= 1


def test_la_composited(tmp_path):
    Image.fromarray(np.array([[[10, 255], [10, 0]]], np.uint8)).save(tmp_path / "la.png")
    a, _ = rgb_of(tmp_path / "la.png")
    assert tuple(a[0, 0]) == (10, 10, 10) and tuple(a[0, 1]) == BACKGROUND


def test_cmyk_jpeg_and_tiff(tmp_path):
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(tmp_path / "c.jpg", quality=100)  # pure red
    Image.new("CMYK", (8, 8), (0, 0, 0, 255)).save(tmp_path / "k.tif")  # black
    a, _ = rgb_of(tmp_path / "c.jpg")
    assert np.abs(a.astype(int) - (255, 0, 0)).max() <= 3
    a, _ = rgb_of(tmp_path / "k.tif")
    assert (a == 0).all()


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_scaled_to_8_bit(tmp_path, suffix):
    values = np.array([[0, 257, 65535, 32896]], dtype=np.uint16)  # -> 0, 1, 255, 128
    Image.fromarray(values).save(tmp_path / f"d{suffix}")
    a, _ = rgb_of(tmp_path / f"d{suffix}")
    assert a[0, :, 0].tolist() == [0, 1, 255, 128] and (a[..., 0] == a[..., 2]).all()


def test_float_and_bilevel_modes():
    f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], np.float32))
    assert np.asarray(to_rgb(f))[0, :, 0].tolist() == [0, 128, 255]
    b = Image.new("1", (2, 1), 1)
    assert (np.asarray(to_rgb(b)) == 255).all()


def test_webp_bmp_lossless(tmp_path):
    px = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    for name, kw in (("x.webp", {"lossless": True}), ("x.bmp", {})):
        Image.fromarray(px).save(tmp_path / name, **kw)
        a, hw = rgb_of(tmp_path / name)
        assert hw == (6, 7) and (a == px).all()


def test_exif_orientation_applied(tmp_path):
    px = np.zeros((10, 20, 3), np.uint8)  # wide image, a white block at the top-left
    px[:3, :3] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: display = rotate 90 degrees clockwise
    Image.fromarray(px).save(tmp_path / "o.jpg", exif=exif, quality=100)
    a, hw = rgb_of(tmp_path / "o.jpg")
    assert a.shape[:2] == (20, 10) and hw == (20, 10)  # upright is tall
    assert a[:3, -3:].mean() > 200 and a[:3, :3].mean() < 50  # the block moved to the top-right


def test_small_image_fit_upscales(tmp_path):
    Image.new("RGB", (3, 2), RGB).save(tmp_path / "s.png")
    pixels, hw = decode(tmp_path / "s.png", 16)
    assert pixels.shape == (3, 16, 16) and hw == (2, 3)
    assert np.abs(pixels.astype(int) - np.array(RGB)[:, None, None]).max() <= 1


def _jpeg_bytes():
    px = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(px).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize(
    "name,content,needle",
    [
        ("empty.jpg", b"", "empty file"),
        ("text.jpg", b"hello, I am not a picture\n" * 10, "not an image"),
        ("truncated.jpg", None, "cannot decode"),
        ("truncated.png", None, "cannot decode"),
    ],
)
def test_bad_files_raise_with_reason(tmp_path, name, content, needle):
    path = tmp_path / name
    if name == "truncated.jpg":
        content = _jpeg_bytes()[:-400]
    if name == "truncated.png":
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        content = buf.getvalue()[: len(buf.getvalue()) // 2]
    path.write_bytes(content)
    with pytest.raises(BadImage) as e:
        open_rgb(path)
    assert needle in e.value.reason and e.value.path == str(path)


def test_unreadable_file(tmp_path, monkeypatch):
    path = tmp_path / "locked.jpg"
    path.write_bytes(_jpeg_bytes())
    os.chmod(path, 0)
    if os.access(path, os.R_OK):  # root reads anything: simulate the refusal instead
        real_open = Image.open

        def deny(fp, *a, **k):
            if str(fp) == str(path):
                raise PermissionError(13, "Permission denied", str(fp))
            return real_open(fp, *a, **k)

        monkeypatch.setattr(Image, "open", deny)
    with pytest.raises(BadImage) as e:
        open_rgb(path)
    assert "permission denied" in e.value.reason
