"""``fastclr prepare SPEC --format shards --out DIR``: a data set as tar shards that ``shards:DIR`` reads.

Per split (``train``, and ``test`` when the spec has an evaluation split) ``DIR/{split}-NNNNNN.tar``
of ``shard_size`` samples each, in a keyed shuffled order (seed 0) so every shard mixes the classes
(sequential readers then see mixed batches). A sample is ``KEY.jpg`` (or the source's own extension)
plus ``KEY.cls`` (its label, when known); KEY is the source's position in the sorted listing.
Image bytes are kept as they are (``size`` 0: nothing is decoded, so a broken file is only found,
and reported, when training meets it), or decoded and re-encoded as JPEG (quality 95) with the
short side resized to ``size`` (broken files are then skipped here, into ``DIR/skipped.txt``).
Standard sets (digits, CIFAR, STL-10) are encoded losslessly as PNG.

``DIR/index.json``: format, version, the spec, size, the median short side, and per split its class
names and shards ``{"name", "count", "keys", "labels"}`` (so reading needs no counting pass), and
the source's file list with byte sizes (``prepare.fingerprint``).
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from PIL import Image

from fastclr.data import badfiles, datasets, survey
from fastclr.data.images import BadImage, open_rgb
from fastclr.data.sets import ImageSet
from fastclr.data.sources.shards import FORMAT, INDEX, VERSION, webdataset
from fastclr.data.write.prepare import fingerprint, open_output
from fastclr.errors import UserError, require_fraction
from fastclr.method.rng import keyed_generator

SHARD_SIZE = 1000  # samples per shard: ~100 MB of ImageNet JPEGs, the size object stores stream well


def reencode(path: Path, size: int) -> bytes:
    """The image with its short side resized to ``size`` (bicubic), as JPEG quality 95 (raises BadImage)."""
    im = open_rgb(path, draft=size)[0]
    scale = size / min(im.size)
    if scale < 1:
        im = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def file_samples(files: list[Path], labels: list[int] | None, size: int, bad: list) -> Iterator[tuple[str, dict]]:
    """(key, members) of each listed file in a keyed shuffled order."""
    order = torch.randperm(len(files), generator=keyed_generator(0, 0, 0x5A4F)).tolist()
    for i in order:
        f = Path(files[i])
        ext = f.suffix.lower().lstrip(".") or "jpg"
        try:
            data = reencode(f, size) if size else f.read_bytes()
        except BadImage as e:
            bad.append((e.path, e.reason))
            continue
        except OSError as e:
            bad.append((str(f), f"unreadable ({e.strerror})"))
            continue
        members = {"jpg" if size or ext == "jpeg" else ext: data}
        if labels is not None:
            members["cls"] = str(int(labels[i])).encode()
        yield f"{i:08d}", members


def array_samples(images: torch.Tensor, labels: torch.Tensor | None) -> Iterator[tuple[str, dict]]:
    """(key, members) of an in-memory uint8 [N, 3, H, W] set, PNG-encoded, in a keyed shuffled order."""
    for i in torch.randperm(images.shape[0], generator=keyed_generator(0, 0, 0x5A4F)).tolist():
        buf = io.BytesIO()
        Image.fromarray(images[i].permute(1, 2, 0).numpy()).save(buf, format="PNG")
        members = {"png": buf.getvalue()}
        if labels is not None:
            members["cls"] = str(int(labels[i])).encode()
        yield f"{i:08d}", members


def write_split(out: Path, split: str, items: Iterator[tuple[str, dict]], shard_size: int) -> list[dict]:
    """Write ``items`` as ``out/{split}-NNNNNN.tar`` shards; returns their index records."""
    wds = webdataset()
    shards: list[dict] = []
    writer = None
    for key, members in items:
        if writer is None or len(shards[-1]["keys"]) == shard_size:
            if writer is not None:
                writer.close()
            name = f"{split}-{len(shards):06d}.tar"
            writer = wds.TarWriter(str(out / name))
            shards.append({"name": name, "count": 0, "keys": [], "labels": []})
        writer.write({"__key__": key, **members})
        rec = shards[-1]
        rec["keys"].append(key)
        rec["labels"].append(int(members["cls"]) if "cls" in members else -1)
        rec["count"] += 1
    if writer is not None:
        writer.close()
    return shards


def write_shards(
    spec: str, out: Path | str, *, size: int = 0, shard_size: int = SHARD_SIZE, max_bad_fraction: float = 0.01
) -> dict:
    """Write ``spec`` as shards in ``out`` (``size`` 0: image bytes kept as they are); returns the CLI's JSON."""
    require_fraction("max_bad_fraction", max_bad_fraction, zero=True)
    if shard_size < 1:
        raise UserError(f"--shard-size {shard_size}: must be >= 1")
    t0 = time.perf_counter()
    source, kind, path, out = open_output(spec, out, "shard folder")
    (out / INDEX).unlink(missing_ok=True)  # a half-written set is never valid
    for old in out.glob("*.tar"):
        old.unlink()
    splits: dict[str, dict] = {}
    bad: list[tuple[str, str]] = []
    side, sources = 0, []
    if kind in ("folder", "list"):
        train, test = datasets.listings(str(path))
        total = 0
        for name, listing in (("train", train), ("test", test)):
            if listing is None:
                continue
            labels = None if listing.labels is None else [int(v) for v in listing.labels]
            items = file_samples(list(listing.files), labels, size, bad)
            splits[name] = {"classes": listing.classes, "shards": write_split(out, name, items, shard_size)}
            total += len(listing.files)
            sources += list(listing.files)
        badfiles.settle(bad, total, max_bad_fraction, out)
        side = size or int(survey.median_short_side(train.files)[0])
    else:
        data = datasets.load(source, 32, download=False)  # digits and the standard sets: decoded arrays
        for name, s in (("train", data.train or data.pretrain), ("test", data.test)):
            if isinstance(s, ImageSet):
                shards = write_split(out, name, array_samples(s.images, s.labels), shard_size)
                splits[name] = {"classes": s.classes, "shards": shards}
        first = data.pretrain
        side = int(min(first.images.shape[-2:])) if isinstance(first, ImageSet) else 0
        sources = list(data.sources)
    if not splits.get("train", {}).get("shards"):
        raise UserError(f"{spec}: no training image could be written; see {out / 'skipped.txt'}")
    index = {"format": FORMAT, "version": VERSION, "spec": source, "size": size, "side": side, "splits": splits,
             "sources": fingerprint(sources)}  # fmt: skip
    (out / INDEX).write_text(json.dumps(index))
    counts = {k: sum(s["count"] for s in v["shards"]) for k, v in splits.items()}
    return {
        "out": str(out),
        "spec": source,
        "format": "shards",
        "size": size,
        "count": sum(counts.values()),
        "shards": sum(len(v["shards"]) for v in splits.values()),
        "skipped": len(bad),
        "splits": counts,
        "seconds": round(time.perf_counter() - t0, 2),
    }
