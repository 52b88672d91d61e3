"""The odd-format policy and the bad-file reasons of fastclr.data.images, on files the tests write."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from fastclr.data.images import BACKGROUND, BadImage, decode, open_rgb, to_rgb
from fastclr.errors import UserError

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


def _photo(seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((80, 60), Image.Resampling.BICUBIC)


def test_heic_phone_photos_decode_and_are_listed(tmp_path):
    pytest.importorskip("pillow_heif")
    from fastclr.data import datasets, images

    assert images.heif_decoder()
    folder = tmp_path / "phone"
    folder.mkdir()
    for i in range(3):
        _photo(i).save(folder / f"IMG_{i:04d}.HEIC", quality=95)
    _photo(3).save(folder / "x.jpg", quality=95)
    pixels, hw = decode(folder / "IMG_0001.HEIC", 32)
    want = np.asarray(_photo(1).resize((43, 32), Image.Resampling.BICUBIC))[:, 5:37].transpose(2, 0, 1)
    assert hw == (60, 80) and pixels.shape == (3, 32, 32)
    assert np.abs(pixels.astype(int) - want.astype(int)).mean() < 12  # lossy codec and resampling apart
    data = datasets.load(str(folder), 64)  # decoded whole at the start (the memory tier)
    assert data.pretrain.images.shape == (4, 3, 64, 64) and data.skipped == []
    assert datasets.median_side(str(folder))[:2] == (60.0, 4)  # the survey reads HEIC headers too


def test_without_pillow_heif_a_heic_file_says_what_to_install(tmp_path, monkeypatch):
    from fastclr.data import datasets, images

    monkeypatch.setattr(images, "_heif", [False])
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "IMG_0001.heic").write_bytes(b"\0\0\0\x18ftypheic")  # never opened: the decoder is missing
    with pytest.raises(BadImage) as e:
        open_rgb(tmp_path / "only" / "IMG_0001.heic")
    assert e.value.reason == images.HEIF_HINT and "fastclr[heic]" in e.value.reason
    with pytest.raises(UserError, match=r"none of the sampled image files could be read; HEIC/HEIF needs pillow-heif"):
        datasets.median_side(str(tmp_path / "only"))


def test_avif_decodes_where_pillow_has_it(tmp_path):
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow has no AVIF decoder (Pillow >= 11.3 built with libavif)")
    _photo(5).save(tmp_path / "a.avif", quality=95)
    image, hw = open_rgb(tmp_path / "a.avif")
    assert hw == (60, 80) and image.mode == "RGB"
