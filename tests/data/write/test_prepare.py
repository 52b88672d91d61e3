"""The decode-once cache: same pixels as decoding on the fly, memory-mapped, stale sources refused."""

import json
import tarfile

import numpy as np
import pytest
import torch

from conftest import CIFAR_ARCHIVE
from fastclr.data import datasets
from fastclr.data.write.prepare import prepare
from fastclr.errors import UserError
from makeimages import write_bad, write_good


def pil_fit(path, size: int) -> np.ndarray:
    """An independent decode of a small square image: PIL to RGB, bicubic resize to size x size (the short side
    to ``size``; square, so nothing to crop): uint8 [3, size, size]."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
        assert rgb.size[0] == rgb.size[1] < size  # the case this decode covers
        return np.asarray(rgb.resize((size, size), Image.Resampling.BICUBIC)).transpose(2, 0, 1)


def load_prepared(folder):
    """A cache as training reads it: ``--data prepared:DIR``."""
    return datasets.load(f"prepared:{folder}", 16)


def labelled_tree(root):
    for c in ("a", "b"):
        write_good(root / "train" / c, 6, size=12, start=0 if c == "a" else 50)
        write_good(root / "test" / c, 2, size=12, start=90 if c == "a" else 95)


def test_cache_equals_on_the_fly_decode(tmp_path):
    labelled_tree(tmp_path / "d")
    res = prepare(str(tmp_path / "d"), 16, tmp_path / "c")
    assert res["count"] == 16 and res["splits"] == {"train": 12, "test": 4} and res["skipped"] == 0
    cached, direct = load_prepared(tmp_path / "c"), datasets.load(str(tmp_path / "d"), 16)
    for a, b in ((cached.train, direct.train), (cached.test, direct.test)):
        assert (
            torch.equal(a.images, b.images)
            and torch.equal(a.labels, b.labels)
            and a.ids == b.ids
            and a.classes == b.classes
        )
    assert cached.pretrain is cached.train
    # the file itself: raw uint8 [N, 3, 16, 16] in C order (no pickle), row i the ids' file i decoded by PIL here
    for split in ("train", "test"):
        raw = np.fromfile(tmp_path / "c" / f"{split}.images.u8", dtype=np.uint8)
        ids = json.loads((tmp_path / "c" / f"{split}.ids.json").read_text())
        assert raw.size == len(ids) * 3 * 16 * 16 and len(ids) == len(getattr(cached, split))
        rows = raw.reshape(len(ids), 3, 16, 16)
        for row, path in zip(rows, ids, strict=True):
            assert np.array_equal(row, pil_fit(path, 16)), path
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["size"] == 16 and len(meta["sources"]) == 16 and all(n > 0 for _, n in meta["sources"])
    via_spec = datasets.load(f"prepared:{tmp_path / 'c'}", 999)  # the cache's own size wins
    assert via_spec.train.images.shape == (12, 3, 16, 16)


def test_changed_source_is_detected(tmp_path):
    labelled_tree(tmp_path / "d")
    prepare(str(tmp_path / "d"), 16, tmp_path / "c")
    write_good(tmp_path / "d" / "train" / "a", 1, size=12, start=200)  # one file added
    with pytest.raises(UserError, match=r"has changed since \(1 files added, 0 removed, 0 changed"):
        load_prepared(tmp_path / "c")
    prepare(str(tmp_path / "d"), 16, tmp_path / "c")
    victim = sorted((tmp_path / "d" / "test" / "b").iterdir())[0]
    victim.write_bytes(victim.read_bytes() + b"\0")  # resized
    with pytest.raises(UserError, match="0 files added, 0 removed, 1 changed"):
        load_prepared(tmp_path / "c")


def test_prepare_skips_bad_files_and_refuses_bad_caches(tmp_path):
    write_good(tmp_path / "d", 120, size=12)
    reasons = write_bad(tmp_path / "d")
    res = prepare(str(tmp_path / "d"), 16, tmp_path / "c", max_bad_fraction=0.1)
    assert res["skipped"] == len(reasons) and res["count"] == len(load_prepared(tmp_path / "c").pretrain)
    assert len((tmp_path / "c" / "skipped.txt").read_text().splitlines()) == 1 + len(reasons)
    with pytest.raises(UserError, match="no valid meta.json"):
        load_prepared(tmp_path / "nothing")
    with pytest.raises(UserError, match="already a prepared cache"):
        prepare(f"prepared:{tmp_path / 'c'}", 16, tmp_path / "c2")


def test_prepare_cifar_jpeg_subset(tmp_path):
    """A few real CIFAR-10 JPEGs from ../shared/data (skipped where the archive is absent)."""
    if not CIFAR_ARCHIVE.exists():
        pytest.skip(f"CIFAR-10 JPEG archive not found at {CIFAR_ARCHIVE} (a user's checkout has no ../shared)")
    want = {"cat": 10, "ship": 10}
    with tarfile.open(CIFAR_ARCHIVE) as tar:
        for m in tar:
            parts = m.name.split("/")
            if m.isfile() and len(parts) == 3 and parts[0] == "train" and want.get(parts[1], 0) > 0:
                want[parts[1]] -= 1
                (tmp_path / "d" / parts[1]).mkdir(parents=True, exist_ok=True)
                (tmp_path / "d" / parts[1] / parts[2]).write_bytes(tar.extractfile(m).read())
            if not any(want.values()):
                break
    res = prepare(str(tmp_path / "d"), 32, tmp_path / "c")
    assert res["count"] == 20 and res["skipped"] == 0
    data = load_prepared(tmp_path / "c")
    assert data.train.classes == ["cat", "ship"] and data.train.labels.tolist() == [0] * 10 + [1] * 10
    from PIL import Image

    first = np.asarray(Image.open(data.train.ids[0]).convert("RGB")).transpose(2, 0, 1)
    assert np.array_equal(data.train.images[0].numpy(), first)  # 32x32 JPEGs at size 32: the decoded pixels, untouched
