"""Listing without decoding: the compact path list, the listing cache, the header-only size survey."""

import os
import time

import numpy as np
import PIL.Image
import pytest

from fastclr.data import datasets, images, survey
from fastclr.data.sources import folders, listing
from makeimages import write_good


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    for name in ("decode", "open_rgb", "fit"):
        real = getattr(images, name)
        monkeypatch.setattr(images, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    real_load = PIL.Image.Image.load
    monkeypatch.setattr(
        PIL.Image.Image, "load", lambda self: calls.append(getattr(self, "filename", "")) or real_load(self)
    )
    real_open = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *a, **k: calls.append("open") or real_open(*a, **k))
    return calls


def test_listing_decodes_nothing_and_labels_from_folders(tmp_path, monkeypatch):
    for c in ("b", "a"):
        write_good(tmp_path / "train" / c, 7, start=0 if c == "a" else 100)
        write_good(tmp_path / "test" / c, 3, start=200 if c == "a" else 300)
    calls = _count_decodes(monkeypatch)
    train, test = datasets.listings(str(tmp_path))
    assert [c for c in calls if c] == []  # not one file opened
    assert len(train.files) == 14 and train.classes == ["a", "b"] and test.classes == ["a", "b"]
    assert list(train.labels) == [0] * 7 + [1] * 7 and train.labels.dtype == np.int64
    assert [p.name for p in train.files] == sorted(p.name for p in (tmp_path / "train" / "a").iterdir()) + sorted(
        p.name for p in (tmp_path / "train" / "b").iterdir()
    )
    assert list(train.files) == folders.scan(tmp_path / "train")  # the same order as the plain scan


def test_listing_cache_is_used_until_the_folder_changes(tmp_path, monkeypatch):
    write_good(tmp_path / "imgs" / "x", 5)
    time.sleep(0.01)
    scans = []
    real = folders.scan_relative
    monkeypatch.setattr(folders, "scan_relative", lambda root, walked=None: scans.append(root) or real(root, walked))
    first = folders.list_folder(tmp_path / "imgs")
    again = folders.list_folder(tmp_path / "imgs")
    assert len(scans) == 1 and list(first.files) == list(again.files)  # the second listing came from the cache
    write_good(tmp_path / "imgs" / "x", 1, start=50)  # a new file changes its folder's mtime
    third = folders.list_folder(tmp_path / "imgs")
    assert len(scans) == 2 and len(third.files) == 6
    os.remove(third.files[0])
    assert len(folders.list_folder(tmp_path / "imgs").files) == 5 and len(scans) == 3


def test_images_added_to_a_folder_that_held_none_are_seen(tmp_path):
    """An empty class folder (or one of other files) at the first listing is watched too: images copied
    into it later change its mtime, not its parent's, and the next listing must see them."""
    write_good(tmp_path / "imgs" / "a", 3)
    (tmp_path / "imgs" / "b").mkdir()
    (tmp_path / "imgs" / "b" / "notes.md").write_text("not an image")
    time.sleep(0.01)
    assert len(folders.list_folder(tmp_path / "imgs").files) == 3
    write_good(tmp_path / "imgs" / "b", 2, start=10)
    later = folders.list_folder(tmp_path / "imgs")
    assert len(later.files) == 5 and sorted(later.classes or []) == ["a", "b"]


def test_path_list_round_trips_and_takes(tmp_path):
    paths = [tmp_path / "a" / "x.jpg", tmp_path / "b" / "ü.png", tmp_path / "c.gif"]
    pl = listing.PathList.of(tmp_path, paths)
    assert list(pl) == paths and pl[1] == paths[1] and len(pl) == 3
    assert list(pl.take([2, 0])) == [paths[2], paths[0]] and list(pl[1:]) == paths[1:]
    other = listing.PathList.of(tmp_path / "val", [tmp_path / "val" / "y.jpg"])
    joined = listing.PathList.join(pl, other)
    assert list(joined) == [*paths, tmp_path / "val" / "y.jpg"] and joined.root == str(tmp_path)
    assert list(listing.PathList.join(other, pl)) == [tmp_path / "val" / "y.jpg", *paths]


def test_survey_reads_headers_only(tmp_path, monkeypatch):
    for i, side in enumerate((20, 30, 40, 300)):
        PIL.Image.new("RGB", (side + 10, side)).save(tmp_path / f"{i}.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    files = sorted(tmp_path.iterdir())
    loads = []
    real_load = PIL.Image.Image.load
    monkeypatch.setattr(
        PIL.Image.Image, "load", lambda self: loads.append(getattr(self, "filename", "")) or real_load(self)
    )
    side, read = survey.median_short_side(files)
    assert (side, read) == (35.0, 4) and [f for f in loads if f] == []  # no file's pixels were loaded
    assert list(survey.sample_index(10_000, 1000)[:3]) == [0, 10, 20] and len(survey.sample_index(10_000)) == 1000


@pytest.mark.parametrize("n,count", [(5, 1000), (3000, 1000)])
def test_sample_index_spans_the_listing(n, count):
    idx = survey.sample_index(n, count)
    assert idx[0] == 0 and idx[-1] == n - 1 and len(idx) == min(n, count) and (np.diff(idx) > 0).all()
