"""A look at a data set without decoding it: the median short side of a sample of its images.

Reading an image's size needs only its header (PIL opens lazily), so a sample of 1,000 files
takes well under a second. Used for the settings chosen from the data (``fastclr/defaults.py``)
and for picking the data tier (``loaders/tiers.py``).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from fastclr.data.images import needs_missing_decoder

SAMPLE = 1000
_SEEN: dict[tuple, tuple[float, int]] = {}  # one survey per listing and process (the config and the data ask)


def short_side(path: Path | str | BinaryIO) -> int | None:
    """The shorter side in px from the image's header (a rotation does not change it), or None if unreadable."""
    if not hasattr(path, "read") and needs_missing_decoder(str(path)):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                return min(im.size)
    except Exception:
        return None


def sample_index(n: int, count: int = SAMPLE) -> np.ndarray:
    """``count`` evenly spaced positions of 0..n-1 (all of them when n <= count): every class is seen."""
    if n <= count:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, count).round().astype(np.int64))


def median_short_side(files: Sequence[Path], count: int = SAMPLE) -> tuple[float, int]:
    """(median short side in px, files whose header was read) over an evenly spaced sample of ``files``.

    Returns (0.0, 0) when no sampled file can be read.
    """
    index = sample_index(len(files), count)
    key = (len(files), count, *(str(files[int(i)]) for i in index[:: max(1, len(index) // 8)]))
    if key not in _SEEN:
        sides = [s for s in (short_side(files[int(i)]) for i in index) if s]
        _SEEN[key] = (float(np.median(sides)) if sides else 0.0), len(sides)
    return _SEEN[key]
