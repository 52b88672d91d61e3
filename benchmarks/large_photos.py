"""The files tier on camera-size photos: JPEGs decoded at the scale their crops need versus at full size.

    python benchmarks/large_photos.py [--images 64] [--side 4000] [--size 96] [--workers 2] [--runs 2]

Writes ``--images`` synthetic ``--side`` x 3/4 ``--side`` JPEGs (smooth colour fields with detail, about the
bytes of a phone photo), then times, side by side in one process, epochs of the files tier's loader
(``data/loaders/files.py``: workers decode, cut the random resized crops and flips, finish the views on this
CPU) with the reduced-scale decode (``augment.crop_source_side``: 392 px a side for 96-px views) and with
the full-size decode it replaces. Loading and augmentation only, no model; one warm-up epoch each.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from provenance import machine, print_rates

from fastclr.data.loaders.files import FileLoader
from fastclr.data.sets import FileSet
from fastclr.method.augment import AugmentConfig, crop_source_side


def write_photos(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` JPEGs of side x 3/4 side: a smooth colour field with fine noise (JPEG work like a photo's)."""
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        field = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(
            (side, side * 3 // 4), Image.Resampling.BICUBIC
        )
        noise = rng.integers(-12, 13, (side * 3 // 4, side, 1), dtype=np.int16)
        pixels = np.clip(np.asarray(field, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        paths.append(folder / f"{i:04d}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def epoch_rate(loader: FileLoader, epoch: int) -> float:
    t0, n = time.perf_counter(), 0
    for batch in loader.epoch(epoch):
        n += len(batch)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--side", type=int, default=4000, help="the photos' long side in px")
    ap.add_argument("--size", type=int, default=96, help="the views' side in px (the CPU default for photos)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    cfg = AugmentConfig(size=args.size, min_scale=0.08, color_strength=0.5, blur=True)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_photos(Path(tmp), args.images, args.side)
        mb = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        data = FileSet(paths, side=args.side * 3 // 4)
        loader = FileLoader(data, args.batch, 0, torch.device("cpu"), views=2, cfg=cfg, workers=args.workers)
        full = FileLoader(data, args.batch, 0, torch.device("cpu"), views=2, cfg=cfg, workers=args.workers)
        full.batches.draft = 0  # the full-size decode, everything else the same
        rates: dict[str, list[float]] = {"reduced-scale decode": [], "full-size decode": []}
        for run in range(args.runs + 1):  # run 0 warms up (workers, page cache)
            for name, each in (("reduced-scale decode", loader), ("full-size decode", full)):
                rate = epoch_rate(each, run)
                if run:
                    rates[name].append(rate)
    print(f"{args.images} JPEGs of {args.side} x {args.side * 3 // 4} ({mb:.1f} MB each), views 2 x {args.size} px, "
          f"batch {args.batch}, {args.workers} workers, {args.runs} runs after 1 warm-up "
          f"(decode side >= {crop_source_side(cfg)} px):")  # fmt: skip
    print_rates(rates, baseline="full-size decode")


if __name__ == "__main__":
    main()
