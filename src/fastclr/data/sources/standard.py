"""The standard data sets: scikit-learn's digits (:func:`digits`, shipped with the dependency) and, in
torchvision's on-disk format, CIFAR-10, CIFAR-100 and STL-10 (:func:`load`).

``ROOT`` holds what torchvision's ``download=True`` leaves there (the extracted archives):

- cifar10: ``ROOT/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``
- cifar100: ``ROOT/cifar-100-python/{train, test, meta}``
- stl10: ``ROOT/stl10_binary/{train_X.bin, train_y.bin, test_X.bin, test_y.bin, unlabeled_X.bin, class_names.txt}``

The CIFAR batches are Python pickles (the data set's own format, as published by its authors);
the STL-10 files are raw uint8 arrays, each image stored column-major. With ``download`` the files
are fetched by torchvision (needs internet); without it a missing set is a one-line error that names
the folder to put the files in.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import torch

from fastclr.data.sets import DataSplits, ImageSet
from fastclr.errors import UserError

STANDARD = ("cifar10", "cifar100", "stl10")
_FOLDER = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "stl10": "stl10_binary"}
_URL = {
    "cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
    "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "stl10": "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
}
_STL_SIDE = 96


def default_root() -> Path:
    """Where standard sets live without ``:ROOT``: ``$FASTCLR_DATA``, else ``~/.cache/fastclr/data``."""
    return Path(os.environ.get("FASTCLR_DATA") or Path.home() / ".cache" / "fastclr" / "data").expanduser()


def files(name: str, root: Path) -> list[Path]:
    """The files a standard set is read from (for the prepared cache's change check)."""
    d = root / _FOLDER[name]
    if name == "cifar10":
        names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]
    elif name == "cifar100":
        names = ["train", "test", "meta"]
    else:
        names = ["train_X.bin", "train_y.bin", "test_X.bin", "test_y.bin", "unlabeled_X.bin", "class_names.txt"]
    return [d / n for n in names]


def _download(name: str, root: Path) -> None:
    import torchvision.datasets as tvd

    try:
        if name == "cifar10":
            tvd.CIFAR10(str(root), train=True, download=True), tvd.CIFAR10(str(root), train=False, download=True)
        elif name == "cifar100":
            tvd.CIFAR100(str(root), train=True, download=True), tvd.CIFAR100(str(root), train=False, download=True)
        else:
            tvd.STL10(str(root), split="train+unlabeled", download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on a bad checksum
        raise UserError(
            f"{name}: download failed ({e}); download {_URL[name]} yourself and extract it into {root}"
        ) from None


def ensure(name: str, root: Path, download: bool) -> None:
    """Check that the set's files are in ``root`` (downloading them when asked), or raise UserError."""
    missing = [f for f in files(name, root) if not f.is_file()]
    if missing and download:
        root.mkdir(parents=True, exist_ok=True)
        _download(name, root)
        missing = [f for f in files(name, root) if not f.is_file()]
    if missing:
        raise UserError(
            f"{name}: {missing[0]} not found; run with --download (needs internet), or download {_URL[name]} "
            f"and extract it into {root} (or give another folder as {name}:ROOT)"
        )


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as f:
        d = pickle.load(f, encoding="latin1")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in d.items()}


def _cifar_rows(d: dict, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(d["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)  # rows are R, G, B planes of 32x32
    y = np.asarray(d[label_key], dtype=np.int64)
    return x, y


def load_cifar(name: str, root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """CIFAR-10 or CIFAR-100 (fine labels): ((train x, y), (test x, y), class names); x uint8 [N, 3, 32, 32]."""
    d = root / _FOLDER[name]
    if name == "cifar10":
        parts = [_cifar_rows(_unpickle(d / f"data_batch_{i}"), "labels") for i in range(1, 6)]
        train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
        test = _cifar_rows(_unpickle(d / "test_batch"), "labels")
        classes = list(_unpickle(d / "batches.meta")["label_names"])
    else:
        train = _cifar_rows(_unpickle(d / "train"), "fine_labels")
        test = _cifar_rows(_unpickle(d / "test"), "fine_labels")
        classes = list(_unpickle(d / "meta")["fine_label_names"])
    return train, test, [c.decode() if isinstance(c, bytes) else c for c in classes]


def read_stl_images(path: Path) -> np.ndarray:
    """An STL-10 ``*_X.bin``: uint8 [N, 3, 96, 96] (memory-mapped; the file stores each channel column-major)."""
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    if raw.size % (3 * _STL_SIDE * _STL_SIDE):
        raise UserError(f"{path}: {raw.size} bytes is not a whole number of 3x96x96 images; download it again")
    return raw.reshape(-1, 3, _STL_SIDE, _STL_SIDE).transpose(0, 1, 3, 2)


def load_stl10(
    root: Path,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], list[str]]:
    """STL-10: (unlabeled x, (train x, y), (test x, y), class names); labels 0..9 (the files store 1..10)."""
    d = root / _FOLDER["stl10"]
    train = (read_stl_images(d / "train_X.bin"), np.fromfile(d / "train_y.bin", dtype=np.uint8).astype(np.int64) - 1)
    test = (read_stl_images(d / "test_X.bin"), np.fromfile(d / "test_y.bin", dtype=np.uint8).astype(np.int64) - 1)
    for x, y, f in ((*train, "train"), (*test, "test")):
        if len(x) != len(y):
            raise UserError(f"{d}: {f}_X.bin has {len(x)} images but {f}_y.bin {len(y)} labels; download the set again")
    classes = [c.strip() for c in (d / "class_names.txt").read_text().splitlines() if c.strip()]
    return read_stl_images(d / "unlabeled_X.bin"), train, test, classes


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """A contiguous uint8 tensor that owns its memory (copies memory-mapped or strided arrays)."""
    return torch.from_numpy(np.ascontiguousarray(x))


def digits() -> DataSplits:
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


def _arrays(name: str, x: np.ndarray, y: np.ndarray | None, classes: list[str] | None) -> ImageSet:
    labels = None if y is None else torch.from_numpy(np.asarray(y, dtype=np.int64))
    return ImageSet(to_tensor(x), labels, [f"{name}:{i}" for i in range(len(x))], classes if y is not None else None)


def load(name: str, root: Path, download: bool = False) -> DataSplits:
    """cifar10 / cifar100 / stl10 from ``root`` in torchvision's format (module docstring)."""
    ensure(name, root, download)
    sources = files(name, root)
    if name == "stl10":
        unlabeled, (xtr, ytr), (xte, yte), classes = load_stl10(root)
        train, test = _arrays("train", xtr, ytr, classes), _arrays("test", xte, yte, classes)
        pre = ImageSet(
            torch.cat([train.images, to_tensor(unlabeled)]),
            None,
            train.ids + [f"unlabeled:{i}" for i in range(len(unlabeled))],
        )
        return DataSplits(name, pre, train, test, sources=sources)
    (xtr, ytr), (xte, yte), classes = load_cifar(name, root)
    train, test = _arrays("train", xtr, ytr, classes), _arrays("test", xte, yte, classes)
    return DataSplits(name, train, train, test, sources=sources)
