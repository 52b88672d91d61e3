"""The prepared cache, read side: ``prepared:DIR`` as DataSplits, refused when its source changed.

The layout (written by :mod:`fastclr.data.write.prepare`): per split, ``DIR/{split}.images.u8`` (raw uint8
[N, 3, S, S]), ``DIR/{split}.labels.npy`` and ``DIR/{split}.ids.json``; ``DIR/meta.json`` holds the
format, size, the absolute spec, the splits and the source's file list with byte sizes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fastclr import log
from fastclr.data.loaders import tiers
from fastclr.data.sets import DataSplits, FileSet, ImageSet
from fastclr.errors import UserError

FORMAT = "fastclr-prepared"
VERSION = 1


def fingerprint(files: list[Path]) -> list[list]:
    """[[path, bytes], ...] of the source files (-1 for one that cannot be read)."""
    out = []
    for f in files:
        try:
            out.append([str(f), f.stat().st_size])
        except OSError:
            out.append([str(f), -1])
    return out


def check_source(meta: dict, where: Path, sources: Callable[[str], list[Path]]) -> None:
    """Raise UserError if the cache's source still exists but its files changed since ``prepare``.

    ``sources(spec)`` lists the source's files now (UserError when the source is gone).
    """
    try:
        now = {p: n for p, n in fingerprint(sources(meta["spec"]))}
    except UserError:
        log.warn(f"{where}: its source {meta['spec']} is gone; using the cache as it is")
        return
    then = {p: n for p, n in meta["sources"]}
    added = [p for p in now if p not in then]
    removed = [p for p in then if p not in now]
    resized = [p for p in now if p in then and now[p] != then[p]]
    if added or removed or resized:
        first = (added + removed + resized)[0]
        raise UserError(
            f"{where} was prepared from {meta['spec']}, which has changed since ({len(added)} files added, "
            f"{len(removed)} removed, {len(resized)} changed; first: {first}); run fastclr prepare again"
        )


def _split(d: Path, name: str, info: dict, size: int, limit: int) -> ImageSet:
    n = info["count"]
    shape = (n, 3, size, size)
    path = d / f"{name}.images.u8"
    images = (
        np.memmap(path, dtype=np.uint8, mode="c", shape=shape) if n else np.zeros(shape, np.uint8)
    )  # copy-on-write: pages load lazily
    labels = torch.from_numpy(np.load(d / f"{name}.labels.npy")) if info["labelled"] else None
    ids = json.loads((d / f"{name}.ids.json").read_text())
    mapped = path if n and limit and tiers.decoded_bytes(n, size) > limit else None
    return ImageSet(torch.from_numpy(images), labels, ids, info["classes"], mapped)


def load_prepared(d: Path, sources: Callable[[str], list[Path]], limit: int = 0, workers: int = 0) -> DataSplits:
    """A cache written by :func:`fastclr.data.write.prepare.prepare` as DataSplits (images memory-mapped,
    not read up front); ``sources`` lists a spec's files, to refuse a cache whose source changed.

    Args:
        limit: the memory budget in bytes: a split larger than it is marked for tier (b), read per
            batch by ``workers`` loader processes (``mapped.py``), never copied whole (0: no limit).
    """
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        raise UserError(
            f"--data prepared:{d}: no valid meta.json there; run fastclr prepare SPEC --size S --out {d} first"
        ) from None
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise UserError(f"--data prepared:{d}: not a fastclr cache of version {VERSION}; run fastclr prepare again")
    check_source(meta, d, sources)
    size = meta["size"]
    sets = {name: _split(d, name, info, size, limit) for name, info in meta["splits"].items()}
    train = sets.get("train")
    pre: ImageSet | FileSet = sets[meta["pretrain"]]
    tier = tiers.MAPPED if isinstance(pre, ImageSet) and pre.mapped is not None else tiers.MEMORY
    log.info(tiers.describe(tier, len(pre), size, limit or tiers.budget(), workers))
    return DataSplits(
        f"prepared:{d.name}",
        pre,
        train if train is not None and train.labels is not None else None,
        sets.get("test"),
        sources=[],
    )
