"""One epoch of augmented views from a prepared cache versus from the JPEG folder, side by side.

    python benchmarks/data_epoch.py --folder CIFAR10_JPEG/train [--size 32] [--batch 512] [--runs 3]

Steps: ``fastclr prepare`` of the folder (timed once), then for each run an epoch over the cache
(in-memory loader, the whole augmentation batched on the device) and an epoch over the JPEG files
(streaming loader: CPU workers decode + random-resized crop + flip, the pixel ops on the device).
Both produce the same V=2 normalised float views of every batch; the timing covers loading and
augmentation only (no model), and waits for the device at the end of each epoch.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from provenance import commit, print_rates

from fastclr.config import Config
from fastclr.data import datasets
from fastclr.data.loaders.files import FileLoader
from fastclr.data.loaders.memory import InMemoryLoader
from fastclr.data.sets import FileSet
from fastclr.data.sources import folders
from fastclr.data.write.prepare import prepare
from fastclr.method.augment import AugmentConfig
from fastclr.train.step import view_recipe


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def epoch_seconds(loader, epoch: int, cfg: Config, device: torch.device) -> tuple[float, int]:
    sync(device)
    t0, n, total = time.perf_counter(), 0, 0.0
    recipe = view_recipe(cfg)
    for batch in loader.epoch(epoch):
        x = batch.views(recipe, epoch)  # what the step does: the pixel ops of cropped views, all of raw ones
        total += float(x[0, 0, 0, 0]) if n == 0 else 0.0  # keep the views alive without a sync per batch
        n += len(batch)
    sync(device)
    return time.perf_counter() - t0, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folder", required=True, help="an image folder, e.g. the CIFAR-10 JPEG train/ tree")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--cache", help="cache folder (default: a temporary one)")
    args = ap.parse_args()
    device = torch.device(args.device)
    cfg = Config(image_size=args.size, batch_size=args.batch, seed=0, views=2)
    aug = AugmentConfig(size=args.size, min_scale=0.08, flip=True, color_strength=0.5)

    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none"
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, GPU {gpu}; torch "
        f"{torch.__version__}; commit {commit()}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(args.cache or tmp) / "cache"
        t0 = time.perf_counter()
        res = prepare(args.folder, args.size, cache, workers=args.workers)
        prep_s = time.perf_counter() - t0
        print(
            f"prepare: {res['count']} images in {prep_s:.1f} s ({res['count'] / prep_s:.0f} images/s, {args.workers} "
            f"workers), skipped {res['skipped']}"
        )
        data = datasets.load(f"prepared:{cache}", 0)
        listing = folders.list_folder(Path(args.folder))
        files = FileSet(listing.files, torch.zeros(len(listing.files), 2, dtype=torch.int64))
        cached = InMemoryLoader(data.pretrain.images, args.batch, 0, device)
        stream = FileLoader(files, args.batch, 0, device, views=2, cfg=aug, workers=args.workers)
        rates: dict[str, list[float]] = {"prepared cache": [], "JPEG folder": []}
        for run in range(args.runs + 1):  # run 0 warms up (page cache, worker start, allocator)
            for name, loader in (("prepared cache", cached), ("JPEG folder", stream)):
                secs, n = epoch_seconds(loader, run, cfg, device)
                if run:
                    rates[name].append(n / secs)
        print(
            f"epoch of {len(cached) * args.batch} images, batch {args.batch}, 2 views at {args.size} px, device "
            f"{device}, {args.runs} runs after 1 warm-up:"
        )
        print_rates(rates, baseline="JPEG folder")


if __name__ == "__main__":
    main()
