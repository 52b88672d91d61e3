"""One image file -> RGB pixels, whatever its format; or a reason why it cannot be read.

The policy for odd inputs, applied to every file the data loaders read:

- EXIF orientation is applied first (a phone photo stored sideways comes out upright).
- grayscale (``1``, ``L``), palette (``P``), CMYK, YCbCr, LAB and HSV images are converted to RGB.
- transparency (``RGBA``, ``LA``, ``PA``, a palette with a transparent colour) is composited on a
  white background: transparent pixels become white, as on a page or a web site.
- 16-bit and 32-bit integer images (16-bit PNG, TIFF; modes ``I;16*``, ``I``) are scaled to 8 bits by
  value / 257 (65535 -> 255, exact for values that were 8-bit before); float images (``F``) are read
  as [0, 1] when their maximum is at most 1, else as [0, 255].
- animated GIF/WebP and multi-page TIFF: the first frame.
- HEIC/HEIF (phone photos) through pillow-heif (``pip install 'fastclr[heic]'``, registered with PIL on first
  use in each process); without it such a file is a bad file whose reason says what to install. AVIF
  through Pillow's own decoder (Pillow >= 11.3 built with libavif).

A file that cannot be decoded (zero bytes, not an image, truncated, unreadable, too large) raises
:class:`BadImage` with a short reason; the caller decides whether to skip it (see ``badfiles.py``).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

BACKGROUND = (255, 255, 255)  # transparent pixels become white
_TO_RGB = ("1", "L", "P", "CMYK", "YCbCr", "LAB", "HSV", "RGBX")
HEIF_SUFFIXES = (".heic", ".heif")
HEIF_HINT = "HEIC/HEIF needs pillow-heif: pip install 'fastclr[heic]'"
_heif: list[bool] = []  # [registered?] once per process


def heif_decoder() -> bool:
    """Whether HEIC/HEIF files can be decoded here: pillow-heif's opener registered with PIL (once per process)."""
    if not _heif:
        try:
            import pillow_heif

            pillow_heif.register_heif_opener()
            _heif.append(True)
        except ImportError:
            _heif.append(False)
    return _heif[0]


def needs_missing_decoder(path: Path | str) -> str | None:
    """The reason ``path`` cannot be decoded here because of its format's missing decoder, or None."""
    if str(path).lower().endswith(HEIF_SUFFIXES) and not heif_decoder():
        return HEIF_HINT
    return None


class BadImage(Exception):
    """A file that cannot be decoded; ``reason`` says why in a few words."""

    def __init__(self, path: Path | str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert a loaded PIL image of any mode to 8-bit RGB (the policy in the module docstring)."""
    if im.mode == "RGB":
        return im
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        page = Image.new("RGBA", rgba.size, BACKGROUND + (255,))
        return Image.alpha_composite(page, rgba).convert("RGB")
    if im.mode.startswith("I") or im.mode == "F":
        a = np.asarray(im)
        if im.mode == "F":
            a = np.clip(a * 255.0 if a.size and float(np.nanmax(a)) <= 1.0 else a, 0, 255)
            g = np.nan_to_num(np.round(a)).astype(np.uint8)
        else:
            g = np.round(np.clip(a.astype(np.int64), 0, 65535) / 257.0).astype(np.uint8)
        return Image.fromarray(g).convert("RGB")
    return im.convert("RGB")


def _orientation_swaps(im: Image.Image) -> bool:
    try:
        return im.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # transposes and 90-degree rotations
    except Exception:  # a broken EXIF block: the pixels may still be fine
        return False


def open_rgb(path: Path | str, draft: int = 0, data: bytes | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``path`` (or the bytes ``data`` of a shard member named ``path``) to an upright RGB image.

    Args:
        path: the image file (with ``data``: the name reported when it cannot be decoded).
        draft: if > 0, a JPEG may be decoded at a reduced scale whose sides stay >= ``draft``
            (libjpeg's DCT scaling: much faster for large photos that end up small).
    Returns:
        (RGB image, (height, width) of the full-resolution upright image).
    Raises:
        BadImage: the file is empty, not an image, truncated, unreadable or too large.
    """
    try:
        if (len(data) if data is not None else os.path.getsize(path)) == 0:
            raise BadImage(path, "empty file (0 bytes)")
        missing = needs_missing_decoder(path)
        if missing:
            raise BadImage(path, missing)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # EXIF and palette warnings: the pixels decide
            with Image.open(io.BytesIO(data) if data is not None else path) as im:
                w, h = im.size
                if _orientation_swaps(im):
                    w, h = h, w
                if draft > 0 and im.format == "JPEG":
                    im.draft(None, (draft, draft))
                im.load()
                im = ImageOps.exif_transpose(im) or im
                return to_rgb(im), (h, w)
    except BadImage:
        raise
    except PermissionError:
        raise BadImage(path, "unreadable (permission denied)") from None
    except FileNotFoundError:
        raise BadImage(path, "missing (a broken link or a file removed during the run)") from None
    except UnidentifiedImageError:
        if str(path).lower().endswith(".avif"):
            raise BadImage(path, "AVIF needs Pillow >= 11.3 built with libavif: pip install -U pillow") from None
        raise BadImage(path, "not an image (unknown format)") from None
    except Image.DecompressionBombError as e:
        raise BadImage(path, f"too large ({e})") from None
    except IsADirectoryError:
        raise BadImage(path, "a folder, not a file") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError... on broken files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise BadImage(path, f"cannot decode ({msg})") from None


def fit(im: Image.Image, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bicubic, antialiased) and centre-crop: uint8 [3, size, size]."""
    w, h = im.size
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) != (w, h):
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
    left, top = (nw - size) // 2, (nh - size) // 2
    im = im.crop((left, top, left + size, top + size))
    return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def decode(path: Path | str, size: int, data: bytes | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """``fit(open_rgb(path))``: uint8 [3, size, size] and the source's upright (height, width)."""
    im, hw = open_rgb(path, draft=size, data=data)
    return fit(im, size), hw
