"""Tier (c): files read by loader workers. Bad files met mid-run, the stop on too many, the eval views."""

import numpy as np
import pytest
import torch
from PIL import Image

from fastclr.data import badfiles, datasets, evalset, images
from fastclr.data.loaders.tiers import build_loader
from fastclr.data.sets import FileSet
from fastclr.errors import UserError
from fastclr.method.augment import AugmentConfig
from makeimages import pixels, write_bad

CFG = AugmentConfig(size=16, min_scale=0.2, flip=True, color_strength=0.5, blur=False)


def _large(folder, n, start=0):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(start, start + n):
        Image.fromarray(pixels(i, 40, 30 + i % 5)).save(folder / f"img{i:03d}.png")


def _epoch(data, workers=0, batch=8, epoch=0):
    loader = build_loader(data.pretrain, batch, 0, torch.device("cpu"), views=2, aug=CFG, workers=workers)
    return [(b.index.clone(), b.rows.clone()) for b in loader.epoch(epoch)]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_bad_file_met_mid_run_is_skipped_and_listed(tmp_path, workers):
    _large(tmp_path / "imgs", 60)
    reasons = write_bad(tmp_path / "imgs")
    data = datasets.load(str(tmp_path / "imgs"), 16, out_dir=tmp_path / "run", max_bad_fraction=0.5)
    assert isinstance(data.pretrain, FileSet) and len(data.skipped) == 0  # nothing decoded yet
    batches = _epoch(data, workers)
    files = data.pretrain.files
    seen = torch.cat([i for i, _ in batches]).tolist()
    assert not any(files[i].name in reasons for i in seen)  # every bad file was replaced by a good one
    assert len(data.skipped) == len(reasons) and not (tmp_path / "run" / "checkpoints").exists()
    lines = (tmp_path / "run" / "skipped.txt").read_text().splitlines()[1:]
    listed = {line.split("\t")[0].rsplit("/", 1)[-1]: line.split("\t")[1] for line in lines}
    assert set(listed) == set(reasons) and all(why in listed[n] for n, why in reasons.items())
    shape = (16, 3, 16, 16) if workers else (2, 8, 3, 16, 16)  # CPU workers finish the views themselves
    assert [v.shape for _, v in batches] == [shape] * (len(files) // 8)
    again = _epoch(data, workers)  # met again next epoch: listed once
    assert len(again) == len(batches) and len((tmp_path / "run" / "skipped.txt").read_text().splitlines()) == 1 + len(
        reasons
    )


def test_replacement_is_keyed_like_the_file_it_reads(tmp_path):
    _large(tmp_path / "imgs", 16)
    (tmp_path / "imgs" / "img003.png").write_bytes(b"")  # sample 3 -> the next file, sample 4
    data = datasets.load(str(tmp_path / "imgs"), 16, out_dir=None, max_bad_fraction=0.5)
    index, views = (torch.cat(x, dim=d) for x, d in zip(zip(*_epoch(data, batch=16)), (0, 1)))
    where = {int(i): k for k, i in enumerate(index)}
    assert 3 not in where and (index == 4).sum() == 2  # twice sample 4, with sample 4's draws both times
    a, b = [k for k, i in enumerate(index.tolist()) if i == 4]
    assert torch.equal(views[:, a], views[:, b])


def test_too_many_bad_files_stop_mid_run(tmp_path, monkeypatch):
    monkeypatch.setattr(badfiles, "MIN_SEEN", 16)
    _large(tmp_path / "imgs", 30)
    write_bad(tmp_path / "imgs")
    data = datasets.load(str(tmp_path / "imgs"), 16, out_dir=tmp_path / "run")
    with pytest.raises(UserError, match=r"read so far .*max_bad_fraction=0.01.*skipped.txt") as e:
        _epoch(data)
    assert "\n" not in str(e.value) and (tmp_path / "run" / "skipped.txt").is_file()


@pytest.mark.parametrize("limit", [0, 1])  # memory, then a scratch memmap (1 byte: always over the budget)
def test_eval_views_equal_decoding_each_file_in_order(tmp_path, monkeypatch, limit):
    maps = []
    real = evalset.scratch
    monkeypatch.setattr(evalset, "scratch", lambda shape: maps.append(shape) or real(shape))
    _large(tmp_path / "train" / "a", 5)
    _large(tmp_path / "train" / "b", 6, start=50)
    (tmp_path / "train" / "a" / "img002.png").write_bytes(b"junk")
    data = datasets.load(str(tmp_path), 16)
    out = evalset.decoded(data.train, 16, workers=2 if limit else 0, limit=limit, batch_size=3)
    good = [f for f in data.train.files if f.name != "img002.png"]
    assert out.ids == [str(f) for f in good] and out.labels.tolist() == [0] * 4 + [1] * 6
    want = np.stack([images.decode(f, 16)[0] for f in good])
    assert np.array_equal(out.images.numpy(), want) and len(maps) == bool(limit)


def test_eval_splits_respect_eval_max_images(tmp_path):
    for c in ("a", "b", "c"):
        _large(tmp_path / "train" / c, 10, start=100 * (ord(c) - 97))
        _large(tmp_path / "test" / c, 2, start=500 + 100 * (ord(c) - 97))
    data = datasets.load(str(tmp_path), 16)
    ev = evalset.eval_splits(data, 16, max_images=7, seed=3)
    assert len(ev.train) == 7 and sorted(np.bincount(ev.train.labels.numpy()).tolist()) == [2, 2, 3]
    assert len(ev.test) == 6 and ev.train.images.shape == (7, 3, 16, 16)
    assert ev.train.ids == evalset.eval_splits(data, 16, max_images=7, seed=3).train.ids  # seeded
    assert len(evalset.eval_splits(data, 16, max_images=0).train) == 30
