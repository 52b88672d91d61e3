"""Data specs -> images in memory.

A spec names where the images come from: ``digits`` (scikit-learn's 8x8 digits, shipped with
the dependency, no download) or a folder. A folder with ``train/`` and ``test/`` (or ``val/``)
sub-folders gives the evaluation split; class sub-folders are labels; a flat folder of images is
unlabeled (pretraining only). Images are decoded once into a uint8 tensor [N, 3, H, W]; a
sample's identity is its index in a sorted, stable listing.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class ImageSet:
    """Decoded images with optional labels.

    images: uint8 [N, 3, H, W]; labels: int64 [N] or None; ids: N strings (file paths or
    indices); classes: label names, or None.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    ids: list[str]
    classes: list[str] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, index: torch.Tensor) -> "ImageSet":
        idx = index.tolist()
        return ImageSet(self.images[index], None if self.labels is None else self.labels[index], [self.ids[i] for i in idx], self.classes)


@dataclass
class DataSplits:
    """What a spec provides: images to pretrain on, and labelled train/test splits when known."""

    name: str
    pretrain: ImageSet
    train: ImageSet | None  # labelled training split (evaluation: kNN bank, linear probe)
    test: ImageSet | None  # labelled test split (evaluation accuracy)


def load_digits() -> DataSplits:
    """scikit-learn's 1,797 handwritten digits (8x8, 17 grey levels), a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    d = _load()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)  # [N, 8, 8]
    x = torch.from_numpy(images)[:, None].expand(-1, 3, -1, -1).contiguous()
    y = torch.from_numpy(d.target.astype(np.int64))
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=d.target)  # fixed: the test set never moves
    tr, te = np.sort(tr), np.sort(te)
    classes = [str(c) for c in range(10)]
    ids = [str(i) for i in range(len(y))]
    train = ImageSet(x[tr], y[tr], [ids[i] for i in tr], classes)
    test = ImageSet(x[te], y[te], [ids[i] for i in te], classes)
    return DataSplits("digits", train, train, test)


def _list_images(root: Path) -> list[Path]:
    files = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files)


def decode_image(path: Path, size: int) -> np.ndarray:
    """Decode one file to RGB, resize its short side to ``size`` and centre-crop: uint8 [3, size, size]."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        im = im.crop((left, top, left + size, top + size))
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)


def load_folder_split(root: Path, size: int, classes: list[str] | None = None) -> ImageSet:
    """Decode every image below ``root``; labels from the first-level folder names when there are any."""
    files = _list_images(root)
    if not files:
        raise UserError(f"{root}: no images found ({', '.join(IMAGE_SUFFIXES)}); point --data at a folder of images")
    top = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1})
    labelled = bool(top) and all(len(p.relative_to(root).parts) > 1 for p in files)
    if labelled:
        found = top
        if classes is None:
            classes = found
        elif found != classes:
            raise UserError(f"{root}: classes {found} differ from the train split's {classes}; both splits need the same class folders")
    images = np.stack([decode_image(p, size) for p in files])
    labels = None
    if labelled:
        lookup = {c: i for i, c in enumerate(classes)}
        labels = torch.tensor([lookup[p.relative_to(root).parts[0]] for p in files], dtype=torch.int64)
    return ImageSet(torch.from_numpy(images), labels, [str(p) for p in files], classes if labelled else None)


def load_folder(root: Path, size: int) -> DataSplits:
    """A folder spec: ``train/`` + ``test/`` (or ``val/``), or one folder (labelled or not)."""
    if not root.is_dir():
        raise UserError(f"--data {root}: no such folder (expected digits or a folder of images)")
    train_dir = root / "train"
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if train_dir.is_dir():
        train = load_folder_split(train_dir, size)
        test = load_folder_split(test_dir, size, train.classes) if test_dir is not None else None
        if test is not None and test.labels is None:
            test = None
        return DataSplits(root.name, train, train if train.labels is not None else None, test)
    data = load_folder_split(root, size)
    return DataSplits(root.name, data, data if data.labels is not None else None, None)


def load(spec: str, image_size: int) -> DataSplits:
    """Resolve a data spec (see module docstring) to decoded images."""
    if spec == "digits":
        return load_digits()
    path = Path(spec).expanduser()
    if path.exists():
        return load_folder(path, image_size)
    raise UserError(f"--data {spec!r}: not a known data set or an existing folder; use digits or a folder of images")


def balanced_subset(data: ImageSet, count: int, seed: int) -> ImageSet:
    """A seeded subset of ``count`` images, class-balanced when labels are known."""
    if count <= 0 or count >= len(data):
        return data
    g = torch.Generator().manual_seed(seed)
    if data.labels is None:
        pick = torch.randperm(len(data), generator=g)[:count]
    else:
        classes = data.labels.unique()
        per = [torch.nonzero(data.labels == c).flatten() for c in classes]
        per = [p[torch.randperm(len(p), generator=g)] for p in per]
        take = [p[: count // len(classes) + (1 if i < count % len(classes) else 0)] for i, p in enumerate(per)]
        pick = torch.cat(take)
    return data.subset(pick.sort().values)


def warn(msg: str) -> None:
    print(f"fastclr: warning: {msg}", file=sys.stderr)
