"""Decode once: a data spec -> a memory-mapped uint8 cache that training reads as ``prepared:DIR``.

``fastclr prepare SPEC --size S --out DIR`` decodes every image (resize the short side to S, centre
crop, the odd-format policy of ``images.py``) and writes, per split (``pretrain``, ``train``, ``test``):

- ``DIR/{split}.images.u8``: raw uint8 [N, 3, S, S], C order (``np.memmap(path, np.uint8, shape=...)``)
- ``DIR/{split}.labels.npy``: int64 [N] (labelled splits only), ``DIR/{split}.ids.json``: N source ids
- ``DIR/meta.json``: format, size, the spec (absolute), splits with counts and class names, and the
  source's file list with byte sizes: loading the cache re-lists the source when it still exists and
  refuses a changed one (files added, removed or resized), so a cache never silently goes stale.
- ``DIR/skipped.txt``: files that could not be decoded, with the reason.

No pickles: numpy arrays and JSON only. Training on the cache skips decoding entirely; the
random-resized crop then works from the cached S x S images, so prepare at the size you train at
(or a little larger).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from fastclr.data import badfiles, datasets, specs
from fastclr.data.images import fit
from fastclr.data.sets import FileSet, ImageSet
from fastclr.data.sources import folders, standard
from fastclr.data.sources.cache import FORMAT, VERSION, fingerprint
from fastclr.errors import UserError, require_fraction


def absolute_spec(spec: str) -> str:
    """The spec with its path made absolute, so the cache can find its source from any folder."""
    kind, path = specs.parse(spec)
    if kind == "prepared":
        raise UserError(f"{spec}: already a prepared cache; give the original data spec to prepare")
    if kind == "shards":
        raise UserError(f"{spec}: already shards; give the original folder or list to prepare")
    if kind == "digits" or path is None:
        return kind
    return f"{kind}:{path.resolve()}" if kind in standard.STANDARD else str(path.resolve())


def _resized(x: torch.Tensor, size: int):
    """Rows of an in-memory ImageSet at size x size (unchanged when they already are)."""
    from PIL import Image

    for row in x:
        a = row.numpy()
        yield a if a.shape[1:] == (size, size) else fit(Image.fromarray(a.transpose(1, 2, 0)), size)


def _write(out: Path, name: str, rows, count: int, ids: list[str], labels) -> None:
    with open(out / f"{name}.images.u8", "wb") as f:
        n = 0
        for a in rows:
            f.write(np.ascontiguousarray(a, dtype=np.uint8).tobytes())
            n += 1
    if n != count:
        raise RuntimeError(f"wrote {n} images of {name}, expected {count}")
    if labels is not None:
        np.save(out / f"{name}.labels.npy", np.asarray(labels, dtype=np.int64))
    (out / f"{name}.ids.json").write_text(json.dumps(ids))


def _folder_split(out: Path, name: str, listing: folders.Listing, size: int, workers: int) -> tuple[dict, list]:
    keep, skipped = [], []

    def rows():
        for f, (pixels, _, reason) in zip(listing.files, folders.iter_decode(listing.files, size, workers)):
            if pixels is None:
                skipped.append((str(f), reason))
                keep.append(False)
                continue
            keep.append(True)
            yield pixels

    with open(out / f"{name}.images.u8", "wb") as fh:
        for a in rows():
            fh.write(a.tobytes())
    ids = [str(f) for f, k in zip(listing.files, keep) if k]
    labels = None if listing.labels is None else [y for y, k in zip(listing.labels, keep) if k]
    if labels is not None:
        np.save(out / f"{name}.labels.npy", np.asarray(labels, dtype=np.int64))
    (out / f"{name}.ids.json").write_text(json.dumps(ids))
    return {"count": len(ids), "labelled": labels is not None, "classes": listing.classes}, skipped


def open_output(spec: str, out: Path | str, what: str) -> tuple[str, str, Path | None, Path]:
    """The spec made absolute (:func:`absolute_spec`), its kind and path, and the folder ``out``, created
    (UserError naming ``what`` when it cannot be)."""
    source = absolute_spec(spec)
    kind, path = specs.parse(source)
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the {what} ({e.strerror})") from None
    return source, kind, path, out


def prepare(
    spec: str,
    size: int | None,
    out: Path | str,
    *,
    download: bool = False,
    max_bad_fraction: float = 0.01,
    workers: int = 0,
) -> dict:
    """Decode ``spec`` at ``size`` into the cache folder ``out`` with ``workers`` processes (0: this one); returns
    the JSON the CLI prints.

    Returns:
        {"out", "spec", "size", "count" (images written, all splits), "skipped", "splits": {name: count}, "seconds"}.
    """
    require_fraction("max_bad_fraction", max_bad_fraction, zero=True)
    if size is None:
        raise UserError("fastclr prepare: --size S is needed for the decoded cache (the training image_size)")
    if size < 8:
        raise UserError(f"--size {size}: must be >= 8")
    t0 = time.perf_counter()
    source, kind, path, out = open_output(spec, out, "cache folder")
    (out / "meta.json").unlink(missing_ok=True)  # a half-written cache is never valid
    if kind in ("folder", "list"):
        splits, sources, skipped = _write_listed(spec, str(path), size, out, max(workers, 0), max_bad_fraction)
    else:
        (splits, sources), skipped = _write_decoded(source, size, out, download), 0
    pretrain_split = "pretrain" if "pretrain" in splits else "train"
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "spec": source,
        "size": size,
        "splits": splits,
        "pretrain": pretrain_split,
        "skipped": skipped,
        "sources": fingerprint(sources),
    }
    (out / "meta.json").write_text(json.dumps(meta))  # last: the cache is valid from here on
    return {
        "out": str(out),
        "spec": source,
        "size": size,
        "count": sum(s["count"] for s in splits.values()),
        "skipped": skipped,
        "splits": {k: v["count"] for k, v in splits.items()},
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _write_listed(
    spec: str, listed: str, size: int, out: Path, workers: int, max_bad_fraction: float
) -> tuple[dict[str, dict], list, int]:
    """The train (and test) split of a folder or list, decoded by ``workers`` processes into ``out``; returns
    (splits, the source files, how many could not be decoded). UserError past ``max_bad_fraction``."""
    train, test = datasets.listings(listed)
    splits: dict[str, dict] = {}
    splits["train"], skipped = _folder_split(out, "train", train, size, workers)
    total = len(train.files)
    if test is not None:
        splits["test"], bad = _folder_split(out, "test", test, size, workers)
        skipped, total = skipped + bad, total + len(test.files)
    badfiles.settle(skipped, total, max_bad_fraction, out)
    if splits["train"]["count"] == 0:
        raise UserError(f"{spec}: none of the {total} images could be decoded; see {out / 'skipped.txt'}")
    return splits, list(train.files) + (list(test.files) if test is not None else []), len(skipped)


def _write_decoded(source: str, size: int, out: Path, download: bool) -> tuple[dict[str, dict], list]:
    """Every split of digits or a standard set (decoded in memory) at ``size`` into ``out``; returns (splits,
    the source files)."""
    data = datasets.load(source, size, download=download)
    assert not isinstance(data.train, FileSet) and not isinstance(data.test, FileSet)  # standard sets: decoded
    sets: dict[str, ImageSet | None] = {"train": data.train, "test": data.test}
    if data.pretrain is not data.train:
        assert isinstance(data.pretrain, ImageSet)  # standard sets and digits are decoded in memory
        sets["pretrain"] = data.pretrain
    splits: dict[str, dict] = {}
    for name, s in sets.items():
        if s is None:
            continue
        labels = None if s.labels is None else s.labels.numpy()
        _write(out, name, _resized(s.images, size), len(s), s.ids, labels)
        splits[name] = {
            "count": len(s),
            "labelled": labels is not None,
            "classes": s.classes if labels is not None else None,
        }
    return splits, list(data.sources)
