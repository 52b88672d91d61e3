"""Image files for the data tests: good ones in every format, and every kind of bad file."""

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

GOOD_FORMATS = ("jpg", "png", "bmp", "gif", "tif", "webp")


def pixels(seed: int, h: int = 12, w: int = 12) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_good(folder: Path, count: int, size: int = 12, start: int = 0) -> list[Path]:
    """``count`` images named img{i:05d}.{fmt}, cycling through the formats."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(start, start + count):
        p = folder / f"img{i:05d}.{GOOD_FORMATS[i % len(GOOD_FORMATS)]}"
        Image.fromarray(pixels(i, size, size)).save(p)
        out.append(p)
    return out


def jpeg_bytes(seed: int = 0) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels(seed, 48, 48)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def write_bad(folder: Path) -> dict[str, str]:
    """Bad files of every kind; returns {name: expected words of the reason}. Also writes files the
    scan must ignore (hidden, ``._x.jpg``, a symbolic-link loop, a README)."""
    folder.mkdir(parents=True, exist_ok=True)
    png = io.BytesIO()
    Image.fromarray(pixels(7, 48, 48)).save(png, "PNG")
    bad = {
        "bad_truncated1.jpg": (jpeg_bytes(1)[:-300], "cannot decode"),
        "bad_truncated2.jpg": (jpeg_bytes(2)[: len(jpeg_bytes(2)) // 2], "cannot decode"),
        "bad_truncated.png": (png.getvalue()[:200], "cannot decode"),
        "bad_empty.jpg": (b"", "empty file"),
        "bad_empty.png": (b"", "empty file"),
        "bad_text.jpg": (b"not an image at all\n" * 20, "not an image"),
        "bad_random.webp": (bytes(np.random.default_rng(3).integers(0, 256, 500, dtype=np.uint8)), "not an image"),
    }
    for name, (content, _) in bad.items():
        (folder / name).write_bytes(content)
    reasons = {name: why for name, (_, why) in bad.items()}
    os.symlink(folder / "does_not_exist.jpg", folder / "bad_dangling.jpg")
    reasons["bad_dangling.jpg"] = "missing"
    locked = folder / "bad_locked.jpg"
    locked.write_bytes(jpeg_bytes(4))
    os.chmod(locked, 0)
    if os.access(locked, os.R_OK):  # running as root: permissions cannot make it unreadable
        os.chmod(locked, 0o644)
    else:
        reasons["bad_locked.jpg"] = "permission denied"
    # ignored by the scan, not counted as bad
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "._img00000.jpg").write_bytes(b"\0\5\26\7 AppleDouble")
    (folder / ".hidden").mkdir(exist_ok=True)
    (folder / ".hidden" / "x.jpg").write_bytes(b"junk")
    (folder / "README.txt").write_text("notes")
    os.symlink(folder, folder / "loop")  # a link to its own folder
    return reasons
