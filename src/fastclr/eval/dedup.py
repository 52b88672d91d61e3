"""Near-duplicate images in an index: ``fastclr dedup``.

Every pair of indexed vectors whose cosine similarity reaches the threshold is found, and pairs are joined into
groups by union-find (so A~B and B~C put A, B and C in one group even where A and C fall below it). An exact
index compares every pair (blocks of a matrix product, memory bounded by the block, time quadratic in N); an
IVF index asks faiss for each vector's neighbours above the threshold in the lists its nprobe searches (the
same approximation, and measured recall, as search). The CSV has one row per image in a group: the group
number, the id, and the cosine similarity to the group's first member (the lowest row), 1.0 for that one.

The default threshold, 0.98, was chosen on planted duplicates of real photos (JPEG re-encoded at quality 40,
resized to 3/4, cropped by 6%) of 300 Tiny-ImageNet photos among 1,000 distinct ones, with a checkpoint pretrained
for 15 epochs at 32 px: it finds 98.6% of the copies and joins 4% of the distinct photos (near-identical scenes)
into groups. How well duplicates separate from look-alikes is the encoder's: figures and the command in
benchmarks/README.md ("Search, near-duplicates, explanations and the service").
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fastclr.errors import UserError
from fastclr.eval.index import VectorIndex

DEFAULT_THRESHOLD = 0.98
ROWS, COLUMNS = 1024, 16_384  # block of the exact pairwise product: 64 MiB of float32


def pairs_above(index: VectorIndex, threshold: float) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Blocks of pairs (rows i, rows j, scores) with i < j and cosine similarity >= ``threshold``."""
    v = index.vectors
    n = len(index)
    if index.kind == "exact":
        for lo in range(0, n, ROWS):
            a = np.asarray(v[lo : lo + ROWS], dtype=np.float32)
            for co in range(lo, n, COLUMNS):
                sims = a @ np.asarray(v[co : co + COLUMNS], dtype=np.float32).T
                i, j = np.nonzero(sims >= threshold)
                i, j = i + lo, j + co
                keep = j > i
                yield i[keep], j[keep], sims[i[keep] - lo, j[keep] - co]
        return
    for lo in range(0, n, ROWS):
        a = np.ascontiguousarray(v[lo : lo + ROWS], dtype=np.float32)
        lims, scores, found = index.faiss.range_search(a, float(np.nextafter(np.float32(threshold), -1)))
        i = np.repeat(np.arange(lo, lo + a.shape[0]), np.diff(lims.astype(np.int64)))
        keep = (found > i) & (scores >= threshold)
        yield i[keep], found[keep].astype(np.int64), scores[keep]


def groups(n: int, pairs: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[list[list[int]], int]:
    """Union-find over ``n`` rows: the groups of two or more rows (each sorted, groups ordered by their first
    row) and the number of pairs seen."""
    parent = np.arange(n)

    def root(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving
            x = int(parent[x])
        return x

    count = 0
    for ii, jj, _ in pairs:
        count += len(ii)
        for i, j in zip(ii.tolist(), jj.tolist()):
            ri, rj = root(i), root(j)
            if ri != rj:
                parent[max(ri, rj)] = min(ri, rj)  # the group's root is its lowest row
    roots = np.array([root(x) for x in range(n)], dtype=np.int64)
    order = np.argsort(roots, kind="stable")  # rows grouped by root, ascending within each group
    bounds = np.flatnonzero(np.diff(roots[order])) + 1
    found = [g.tolist() for g in np.split(order, bounds) if len(g) > 1]
    return sorted(found, key=lambda g: g[0]), count


def command(index: str, threshold: float = DEFAULT_THRESHOLD, out: str | None = None) -> dict:
    """``fastclr dedup``: groups of near-duplicate images in an index, written as CSV.

    Pairs whose cosine similarity reaches the threshold are joined into groups by union-find. The CSV has one
    row per grouped image: group, id, score (cosine similarity to the group's first member). The default 0.98
    found 98.6% of planted copies (re-encoded, resized, slightly cropped) of Tiny-ImageNet photos and joined 4%
    of the distinct ones, with a briefly pretrained checkpoint (benchmarks/README.md); the separation depends on
    the encoder, so check it on yours. Needs pip install 'fastclr[search]'.

    Args:
        index: an index folder written by fastclr index.
        threshold: cosine similarity from which two images count as duplicates, in (0, 1].
        out: CSV file to write (default: INDEX/duplicates.csv).
    """
    if not 0 < threshold <= 1:
        raise UserError(f"--threshold {threshold}: must be in (0, 1]")
    vi = VectorIndex.load(index)
    found, pairs = groups(len(vi), pairs_above(vi, threshold))
    path = Path(out) if out else Path(index) / "duplicates.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "id", "score"])
        for g, rows in enumerate(found, start=1):
            first = np.asarray(vi.vectors[rows[0]], dtype=np.float32)
            scores = np.asarray(vi.vectors[rows], dtype=np.float32) @ first
            for r, s in zip(rows, scores):
                writer.writerow([g, vi.ids[r], f"{min(float(s), 1.0):.6f}"])
    grouped = sum(len(g) for g in found)
    return {
        "index": index,
        "threshold": threshold,
        "images": len(vi),
        "groups": len(found),
        "grouped_images": grouped,
        "duplicates": grouped - len(found),  # images that could go, keeping one of each group
        "largest_group": max((len(g) for g in found), default=0),
        "pairs": pairs,
        "kind": vi.kind,
        "out": str(path),
    }
