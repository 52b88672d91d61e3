"""Data specs: folders (scan, labels, bad-file policy), lists, CIFAR-10/100 and STL-10 archives."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from fastclr.data import datasets
from fastclr.data.sets import FileSet, ImageSet
from fastclr.data.sources import folders
from fastclr.errors import UserError
from makeimages import pixels, write_bad, write_good


def test_scan_ignores_hidden_loops_and_other_files(tmp_path):
    good = write_good(tmp_path, 6)
    reasons = write_bad(tmp_path)
    found = folders.scan(tmp_path)
    names = [p.name for p in found]
    assert names == sorted(names)  # a sorted, stable listing
    assert set(names) == {p.name for p in good} | set(reasons) | {
        "bad_locked.jpg"
    }  # no hidden file, nothing twice via the loop
    assert not any(part.startswith(".") for p in found for part in p.relative_to(tmp_path).parts)


def test_folder_skips_bad_files_and_lists_them(tmp_path, capsys):
    write_good(tmp_path / "imgs", 200)
    reasons = write_bad(tmp_path / "imgs")
    out = tmp_path / "run"
    data = datasets.load(str(tmp_path / "imgs"), 16, out_dir=out, max_bad_fraction=0.05)
    n_good = 200 + ("bad_locked.jpg" not in reasons)
    assert len(data.pretrain) == n_good and data.train is None and data.pretrain.labels is None
    assert data.pretrain.images.shape == (n_good, 3, 16, 16) and data.pretrain.images.dtype == torch.uint8
    assert len(data.skipped) == len(reasons)
    lines = (out / "skipped.txt").read_text().splitlines()[1:]
    listed = {line.split("\t")[0].rsplit("/", 1)[-1]: line.split("\t")[1] for line in lines}
    assert set(listed) == set(reasons)
    for name, why in reasons.items():
        assert why in listed[name], (name, listed[name])
    assert f"skipped {len(reasons)} of {n_good + len(reasons)} files" in capsys.readouterr().err


def test_too_many_bad_files_stop_before_training(tmp_path):
    write_good(tmp_path / "imgs", 20)
    reasons = write_bad(tmp_path / "imgs")
    with pytest.raises(UserError, match="could not be decoded, more than max_bad_fraction=0.01") as e:
        datasets.load(str(tmp_path / "imgs"), 16, out_dir=tmp_path / "run")  # decoded at the start: tier (a)
    assert "\n" not in str(e.value)
    assert len((tmp_path / "run" / "skipped.txt").read_text().splitlines()) == 1 + len(reasons)


def test_labelled_folder_with_test_split(tmp_path):
    for split, n in (("train", 4), ("test", 2)):
        for c in ("cat", "dog"):
            write_good(tmp_path / split / c, n, start=0 if c == "cat" else 100)
    data = datasets.load(str(tmp_path), 16)
    assert data.train.classes == ["cat", "dog"] and data.train.labels.tolist() == [0] * 4 + [1] * 4
    assert data.test.labels.tolist() == [0, 0, 1, 1] and data.pretrain is data.train
    # identity = index in the sorted listing
    assert data.train.ids == sorted(data.train.ids, key=lambda s: s.split("/train/")[1])


def test_a_test_split_may_leave_classes_out(tmp_path):
    """A class without test images (a small val/ folder) keeps the train split's numbering."""
    for c in ("ant", "bee", "cat"):
        write_good(tmp_path / "train" / c, 2, start=10 * len(c) + ord(c[0]))
    for c in ("ant", "cat"):
        write_good(tmp_path / "val" / c, 1, start=ord(c[0]))
    data = datasets.load(str(tmp_path), 8)
    assert data.train.classes == data.test.classes == ["ant", "bee", "cat"]
    assert data.test.labels.tolist() == [0, 2] and data.train.labels.tolist() == [0, 0, 1, 1, 2, 2]


def test_class_mismatch_empty_folder_unknown_spec(tmp_path):
    write_good(tmp_path / "d" / "train" / "cat", 2)
    write_good(tmp_path / "d" / "test" / "cow", 2)
    with pytest.raises(UserError, match=r"class folders cow are not among the train split's 1 classes"):
        datasets.load(str(tmp_path / "d"), 8)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"x")
    with pytest.raises(UserError, match="no images found"):
        datasets.load(str(tmp_path / "empty"), 8)
    with pytest.raises(UserError, match="not a known data set"):
        datasets.load("imagenet-but-misspelt", 8)
    with pytest.raises(UserError, match="prepared:DIR needs"):
        datasets.load("prepared:", 8)


def test_list_file_labels_relative_paths_and_missing(tmp_path):
    files = write_good(tmp_path / "pics", 4)
    (tmp_path / "lists").mkdir()
    rows = ["path,label"] + [f"../pics/{f.name},{'b' if i % 2 else 'a'}" for i, f in enumerate(files)]
    (tmp_path / "lists" / "train.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "lists" / "test.csv").write_text(f"# held out\n../pics/{files[0].name},a\n")
    data = datasets.load(str(tmp_path / "lists" / "train.csv"), 16)
    assert data.train.classes == ["a", "b"] and data.train.labels.tolist() == [0, 1, 0, 1]
    assert len(data.test) == 1 and data.test.labels.tolist() == [0]
    assert torch.equal(data.train.images[0], data.test.images[0])  # the same file, the same pixels
    (tmp_path / "lists" / "plain.txt").write_text("\n".join(f"../pics/{f.name}" for f in files))
    assert datasets.load(str(tmp_path / "lists" / "plain.txt"), 8).pretrain.labels is None
    (tmp_path / "lists" / "gone.csv").write_text(f"../pics/{files[0].name}\n../pics/nope.jpg\n")
    with pytest.raises(UserError, match=r"1 listed files do not exist \(first: line 2, '../pics/nope.jpg'\)"):
        datasets.load(str(tmp_path / "lists" / "gone.csv"), 8)
    (tmp_path / "lists" / "mixed.csv").write_text(f"../pics/{files[0].name},a\n../pics/{files[1].name}\n")
    with pytest.raises(UserError, match="line 2 has no label"):
        datasets.load(str(tmp_path / "lists" / "mixed.csv"), 8)


def test_large_images_stream_small_images_stay_in_memory(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(3):
        Image.fromarray(pixels(i, 40, 30)).save(big / f"{i}.png")
    data = datasets.load(str(big), 16)
    assert isinstance(data.pretrain, FileSet) and data.pretrain.side == 30 and len(data.pretrain) == 3
    small = datasets.load(str(big), 32)  # short side 30 <= 32: decoded into memory at 32
    assert isinstance(small.pretrain, ImageSet) and small.pretrain.images.shape == (3, 3, 32, 32)


def _write_cifar(root, name, n_train, n_test, n_classes):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        d = root / "cifar-10-batches-py"
        d.mkdir(parents=True)
        batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
        sizes = [n_train // 5] * 5 + [n_test]
        key, meta, meta_key = "labels", "batches.meta", "label_names"
    else:
        d = root / "cifar-100-python"
        d.mkdir(parents=True)
        batches, sizes = ["train", "test"], [n_train, n_test]
        key, meta, meta_key = "fine_labels", "meta", "fine_label_names"
    written = {}
    for b, n in zip(batches, sizes):
        x = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        y = rng.integers(0, n_classes, n).tolist()
        with open(d / b, "wb") as f:
            pickle.dump(
                {"batch_label": b, key: y, "data": x, "filenames": [f"{i}.png" for i in range(n)]}, f, protocol=2
            )
        written[b] = (x, y)
    with open(d / meta, "wb") as f:
        pickle.dump({meta_key: [f"class{c}" for c in range(n_classes)]}, f, protocol=2)
    return written


@pytest.mark.parametrize("name,n_classes,train_key", [("cifar10", 10, "data_batch_"), ("cifar100", 100, "train")])
def test_cifar_archives(tmp_path, name, n_classes, train_key):
    written = _write_cifar(tmp_path, name, 20, 6, n_classes)
    data = datasets.load(f"{name}:{tmp_path}", 32)
    train_parts = [v for k, v in written.items() if k.startswith(train_key)]
    x = np.concatenate([p[0] for p in train_parts]).reshape(-1, 3, 32, 32)
    assert torch.equal(data.train.images, torch.from_numpy(x)) and data.pretrain is data.train
    assert data.train.labels.tolist() == sum((p[1] for p in train_parts), [])
    test_x, test_y = written["test_batch" if name == "cifar10" else "test"]
    assert (
        torch.equal(data.test.images[3], torch.from_numpy(test_x[3].reshape(3, 32, 32)))
        and data.test.labels.tolist() == test_y
    )
    assert len(data.train.classes) == n_classes and data.train.classes[1] == "class1"
    # a red pixel at (row 0, col 1): the R plane comes first, rows of 32
    assert data.train.images[0, 0, 0, 1] == x[0, 0, 0, 1]


def test_cifar_missing_offline_message(tmp_path):
    with pytest.raises(UserError) as e:
        datasets.load(f"cifar10:{tmp_path / 'nowhere'}", 32)
    msg = str(e.value)
    assert (
        "--download" in msg and str(tmp_path / "nowhere") in msg and "cifar-10-python.tar.gz" in msg and "\n" not in msg
    )


def test_stl10_binary(tmp_path):
    d = tmp_path / "stl10_binary"
    d.mkdir()
    rng = np.random.default_rng(0)
    imgs = {}
    for split, n in (("train", 3), ("test", 2), ("unlabeled", 4)):
        x = rng.integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # [N, C, H, W]
        x.transpose(0, 1, 3, 2).tofile(d / f"{split}_X.bin")  # the format stores each channel column-major
        imgs[split] = x
    (d / "train_y.bin").write_bytes(bytes([1, 10, 3]))
    (d / "test_y.bin").write_bytes(bytes([2, 2]))
    (d / "class_names.txt").write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    data = datasets.load(f"stl10:{tmp_path}", 96)
    assert torch.equal(data.train.images, torch.from_numpy(imgs["train"])) and data.train.labels.tolist() == [0, 9, 2]
    assert torch.equal(data.test.images, torch.from_numpy(imgs["test"])) and data.test.labels.tolist() == [1, 1]
    assert len(data.pretrain) == 7 and data.pretrain.labels is None  # train + unlabeled
    assert torch.equal(data.pretrain.images[3:], torch.from_numpy(imgs["unlabeled"]))
    assert data.train.classes == [f"c{i}" for i in range(10)]
