"""Data for the GPU check: synthetic JPEG folders (numpy + PIL, seeded) and the CIFAR-10 JPEG archive.

- :func:`photo_folder`: ``train/<class>/<a|b>/*.jpg`` (class folders with sub-folders: the nested layout)
  and ``test/<class>/*.jpg`` of 48-96 px images whose colour and stripe direction tell the class, plus a few
  large (360-480 px) ones in train; and a flat folder (no labels) of 120-200 px images, one 400 x 300 and a
  PNG among them, larger than the training side, so ``fastclr embed`` streams it from the files (the files
  tier, loader workers).
- :func:`cifar_folder`: the CIFAR-10 JPEGs unpacked from the archive (all of it, or a few per class for a
  dry run), or a synthetic CIFAR-like folder of 32-px images when a dry run finds no archive.
"""

from __future__ import annotations

import colorsys
import os
import subprocess
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_image(rng: np.random.Generator, label: int, classes: int, h: int, w: int) -> np.ndarray:
    """uint8 [h, w, 3]: stripes at the class's angle over the class's hue, a random phase, JPEG-like noise."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    angle = np.pi * label / classes + rng.normal(0, 0.1)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * (x * np.cos(angle) + y * np.sin(angle)) + rng.uniform(0, 6.3))
    hue = (label / classes + rng.normal(0, 0.03)) % 1.0
    base = np.array(colorsys.hsv_to_rgb(hue, 0.7, 0.9))
    px = 255 * base * (0.4 + 0.6 * stripes[..., None]) + rng.normal(0, 10, (h, w, 3))
    return np.clip(px, 0, 255).astype(np.uint8)


def _save(px: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".jpg":
        Image.fromarray(px).save(path, quality=90)
    else:
        Image.fromarray(px).save(path)


def photo_folder(root: Path, classes: int, train: int, test: int, large: int = 2, flat: int = 12) -> dict:
    """Write the labelled folder ``root/labelled`` and the flat folder ``root/flat``; their paths and counts."""
    rng = np.random.default_rng(0)
    labelled, flat_dir = root / "labelled", root / "flat"

    def side() -> int:
        return int(rng.integers(48, 97))

    for c in range(classes):
        for i in range(train):
            _save(
                class_image(rng, c, classes, side(), side()),
                labelled / "train" / f"c{c}" / "ab"[i % 2] / f"{i:04d}.jpg",
            )
        for i in range(test):
            _save(class_image(rng, c, classes, side(), side()), labelled / "test" / f"c{c}" / f"{i:04d}.jpg")
    for i in range(large):  # larger than the training side: resized on decode
        c = i % classes
        _save(class_image(rng, c, classes, 360 + 40 * i, 480), labelled / "train" / f"c{c}" / "large" / f"{i:04d}.jpg")
    for i in range(flat):
        h, w = (400, 300) if i == 0 else (int(rng.integers(120, 201)), int(rng.integers(120, 201)))
        _save(class_image(rng, i % classes, classes, h, w), flat_dir / f"{i:04d}{'.png' if i == 1 else '.jpg'}")
    return {
        "labelled": str(labelled),
        "flat": str(flat_dir),
        "train_images": classes * train + large,
        "test_images": classes * test,
        "flat_images": flat,
    }


def find_archive(root: Path) -> Path | None:
    """The CIFAR-10 JPEG archive: $CIFAR_ARCHIVE, .gpu/, ../shared/data/ (the first that exists)."""
    for candidate in (
        os.environ.get("CIFAR_ARCHIVE", ""),
        ".gpu/cifar10-jpeg.tar.xz",
        "../shared/data/cifar10-jpeg.tar.xz",
    ):
        if candidate and (root / candidate).is_file():
            return (root / candidate).resolve()
    return None


def cifar_folder(root: Path, dest: Path, per_class: tuple[int, int] | None) -> tuple[Path, str]:
    """The CIFAR-10 JPEG folder (``train/`` and ``test/``) in ``dest``, and where it came from.

    ``per_class`` None: the whole archive (``tar``; kept for a rerun on the same machine). (train, test): that
    many images per class, from the archive when there is one, else synthetic 32-px images (a dry run in CI).
    """
    archive = find_archive(root)
    done = dest / ".complete"
    if done.is_file():
        return dest, done.read_text()
    dest.mkdir(parents=True, exist_ok=True)
    if archive is None and per_class is None:
        raise SystemExit(
            "CIFAR-10 JPEG archive not found: copy it to .gpu/cifar10-jpeg.tar.xz (benchmarks/README.md) or set "
            "CIFAR_ARCHIVE"
        )
    if per_class is None:
        try:
            subprocess.run(["tar", "-xJf", str(archive), "-C", str(dest)], check=True)
        except (OSError, subprocess.CalledProcessError):  # no tar or no xz there: Python's (slower)
            with tarfile.open(archive) as tar:
                tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        source = f"{archive.name}: all images"
    elif archive is not None:
        want = {"train": per_class[0], "test": per_class[1]}
        seen: Counter = Counter()
        with tarfile.open(archive) as tar:
            for member in tar:
                parts = Path(member.name).parts
                if not member.isfile() or len(parts) != 3 or parts[0] not in want:
                    continue
                if seen[parts[0], parts[1]] >= want[parts[0]]:
                    continue
                seen[parts[0], parts[1]] += 1
                target = dest.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(member).read())
                if sum(seen.values()) == len(CIFAR_CLASSES) * sum(per_class):
                    break
        source = f"{archive.name}: {per_class[0]} train + {per_class[1]} test images per class"
    else:
        rng = np.random.default_rng(0)
        for split, n in zip(("train", "test"), per_class):
            for c, name in enumerate(CIFAR_CLASSES):
                for i in range(n):
                    _save(class_image(rng, c, len(CIFAR_CLASSES), 32, 32), dest / split / name / f"{i:04d}.jpg")
        source = f"synthetic CIFAR-like 32-px JPEGs (no archive): {per_class[0]} train + {per_class[1]} test per class"
    done.write_text(source)
    return dest, source
