"""``fastclr prepare``: a data set written once for fast reading, as the decoded cache (``prepare.py``,
``--data prepared:DIR``) or as tar shards of encoded images (``shards.py``, ``--data shards:DIR``)."""

from __future__ import annotations

from pathlib import Path

from fastclr.data.write.prepare import prepare
from fastclr.data.write.shards import write_shards


def command(
    spec: str,
    out: Path | str,
    size: int | None = None,
    *,
    format: str = "cache",
    shard_size: int = 1000,
    download: bool = False,
    workers: int = 4,
    max_bad_fraction: float = 0.01,
) -> dict:
    """``fastclr prepare``: decode and resize every image of ``spec`` to ``size`` x ``size`` (short side,
    centre crop) into ``out`` once: uint8 arrays, labels, ids and the source's file list (a changed source is
    detected). For CIFAR-size images use size 32; prepare at the size you train at. ``format`` shards:
    tar shards of encoded images (``--data shards:DIR``), re-encoded with the short side at ``size`` when
    given, else the image bytes as they are.
    """
    if format == "shards":
        return write_shards(spec, out, size=size or 0, shard_size=shard_size, max_bad_fraction=max_bad_fraction)
    return prepare(spec, size, out, download=download, max_bad_fraction=max_bad_fraction, workers=workers)
