"""Data at scale: start-up time, peak memory and loader throughput against the number of images.

Builds synthetic ImageNet-layout folders (``train/<class>/*.jpg``, 160-px JPEGs, 100 classes) of each
size asked for and measures, per size:

- ``start_s``: seconds from launching ``fastclr pretrain`` (96 px, 2 loader workers, files tier) to
  its first training step (the first line of metrics.jsonl), on a first run (the folder is listed)
  and a second run (the listing comes from the cache);
- ``peak_rss_gb`` and ``peak_pss_gb`` of the whole process tree (workers included), sampled every
  0.1 s from /proc while the run lists, starts and trains 5 steps (RSS counts pages shared between
  the processes once per process; PSS splits them);
- ``images_per_s``: steady loader throughput over 50 batches of 64 after 5 warm-up batches, two
  views per image, crops by the workers and the colour ops in the main process (the CPU is the
  device here) -- and the same for torchvision's ``ImageFolder`` + ``DataLoader`` with the
  equivalent per-image transforms (RandomResizedCrop 96, flip, ColorJitter p=0.8, grayscale p=0.2,
  blur, ToTensor) and the same 2 workers.

    python benchmarks/scale.py --sizes 10000 100000 --root /tmp/fastclr_scale

The folders are written once (copies of 500 distinct JPEGs) and reused by later runs.

``--shards``: the same sets also written as tar shards (``fastclr prepare --format shards``, bytes
kept, 1,000 per shard) and measured the same way with ``--data shards:DIR`` (``shards_*`` columns),
beside WebDataset's own plain pipeline (``WebDataset(urls).shuffle(1000).decode("pil")`` with the
same per-image transforms and 2 workers) as the reference (``webdataset_images_per_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from provenance import commit

ROOT = Path(__file__).resolve().parents[1]
CLASSES = 100
SIZE = 96
BATCH = 64


def build(root: Path, count: int) -> Path:
    """train/<class>/<i>.jpg with ``count`` images of 160 px short side (copies of 500 distinct JPEGs),
    and val/<class>/<i>.jpg with count / 20 more (ImageNet's val is 4% of its train split)."""
    from io import BytesIO

    from PIL import Image

    done = root / f"done_{count}"
    if done.is_file() and (root / "val").is_dir():
        return root
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(500):
        w = int(rng.integers(160, 240))
        a = rng.integers(0, 256, (20, w // 8, 3), dtype=np.uint8)
        im = Image.fromarray(a).resize((w, 160), Image.BILINEAR)  # smooth content, JPEG-typical size
        buf = BytesIO()
        im.save(buf, "JPEG", quality=85)
        pool.append(buf.getvalue())
    for split, n in (("train", count), ("val", count // 20)):
        if split == "train" and done.is_file():
            continue
        for i in range(n):
            folder = root / split / f"n{i % CLASSES:08d}"
            if i < CLASSES:
                folder.mkdir(parents=True, exist_ok=True)
            (folder / f"img_{i:07d}.jpg").write_bytes(pool[(i * 7 + (split == "val")) % len(pool)])
    done.write_text(str(count))
    return root


def _tree(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def _memory(pids: list[int]) -> tuple[int, int]:
    """(sum of RSS, sum of PSS) in bytes."""
    rss = pss = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1]) * 1024
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1]) * 1024
        except OSError:
            continue
    return rss, pss


def start_run(data: Path | str, out: Path, evaluate: bool = False) -> dict:
    """Launch a 5-step pretraining run; time to its first step, the tree's peak memory, total seconds
    (with ``evaluate``: the end-of-run kNN and probe on eval_max_images train images and the val split)."""
    cmd = [sys.executable, "-m", "fastclr", "pretrain", "--data", str(data), "--out", str(out), "--no-resume"]
    cmd += ["--max-steps", "5", "--batch-size", str(BATCH), "--device", "cpu", "--epochs", "1"]
    for s in (f"image_size={SIZE}", "workers=2", f"eval={str(evaluate).lower()}", "log_every=1", "arch=resnet_mini"):
        cmd += ["--set", s]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    first, peak_rss, peak_pss = None, 0, 0
    metrics = out / "metrics.jsonl"
    while proc.poll() is None:
        if first is None and metrics.is_file() and metrics.stat().st_size > 0:
            first = time.perf_counter() - t0
        rss, pss = _memory(_tree(proc.pid))
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        time.sleep(0.1)
    _, err = proc.communicate()
    total = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(err[-2000:])
    return {
        "start_s": round(first or float("nan"), 2),
        "total_s": round(total, 1),
        "peak_rss_gb": peak_rss / 2**30,
        "peak_pss_gb": peak_pss / 2**30,
    }


def steady_ips(batches: Iterable[Any], steps: int = 50, warmup: int = 5, finish: Callable[[Any], Any] = id) -> float:
    """Images/s over ``steps`` batches of BATCH after ``warmup`` batches; ``finish`` runs on each batch."""
    t0 = 0.0
    for b, batch in enumerate(batches):
        finish(batch)
        if b + 1 == warmup:
            t0 = time.perf_counter()
        if b + 1 == warmup + steps:
            break
    return steps * BATCH / (time.perf_counter() - t0)


def fastclr_ips(data: Path | str, steps: int = 50, warmup: int = 5) -> float:
    """Images/s of the files tier (or of ``shards:DIR``): workers decode and crop, the main process
    applies the colour ops."""
    import torch

    from fastclr.config import Config
    from fastclr.data import datasets
    from fastclr.data.loaders.base import Batch
    from fastclr.data.loaders.tiers import build_loader
    from fastclr.train.step import view_recipe

    cfg = Config(image_size=SIZE, blur=True, color_strength=1.0, seed=0)
    recipe = view_recipe(cfg)
    d = datasets.load(str(data), SIZE, workers=2)
    loader = build_loader(d.pretrain, BATCH, 0, torch.device("cpu"), views=2, aug=recipe.aug, workers=2)

    def finish(batch: Batch) -> None:
        batch.views(recipe, 0)  # what the step does (nothing left when the workers finished the views)

    return steady_ips(loader.epoch(0), steps, warmup, finish)


def per_image_transform():
    """torchvision's per-image equivalent of the SimCLR augmentation."""
    from torchvision import transforms as T

    return T.Compose(
        [
            T.RandomResizedCrop(SIZE, scale=(0.08, 1.0)),
            T.RandomHorizontalFlip(),
            T.RandomApply([T.ColorJitter(0.8, 0.8, 0.8, 0.2)], p=0.8),
            T.RandomGrayscale(0.2),
            T.RandomApply([T.GaussianBlur(9, (0.1, 2.0))], p=0.5),
            T.ToTensor(),
        ]
    )


def torchvision_ips(data: Path, steps: int = 50, warmup: int = 5) -> float:
    """Images/s of torchvision's ImageFolder + DataLoader with the per-image equivalents, 2 workers."""
    import torch
    from torchvision import datasets as tvd

    one = per_image_transform()
    ds = tvd.ImageFolder(str(data / "train"), transform=lambda im: torch.stack([one(im), one(im)]))
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=2, drop_last=True)
    return steady_ips(loader, steps, warmup)


def webdataset_ips(shards: Path, steps: int = 50, warmup: int = 5) -> float:
    """Images/s of WebDataset's plain pipeline over the same shards, same transforms, 2 workers."""
    import torch
    import webdataset as wds

    one = per_image_transform()
    urls = sorted(str(p) for p in shards.glob("train-*.tar"))
    ds = (
        wds.WebDataset(urls, shardshuffle=len(urls), nodesplitter=wds.split_by_node)
        .shuffle(1000)
        .decode("pil")
        .to_tuple("jpg")
        .map(lambda s: torch.stack([one(s[0]), one(s[0])]))
        .batched(BATCH, partial=False)
    )
    loader = wds.WebLoader(ds, batch_size=None, num_workers=2)
    return steady_ips(loader, steps, warmup)


def shard_row(data: Path, skip_reference: bool) -> dict:
    """The shards columns: the set written as shards once, then measured as the folder is."""
    from fastclr.data.write.shards import write_shards

    shards = data.parent / f"{data.name}_shards"
    if not (shards / "index.json").is_file():
        write_shards(str(data), shards)
    with tempfile.TemporaryDirectory() as out:
        run = start_run(f"shards:{shards}", Path(out) / "s")
    row = {
        "shards_start_s": run["start_s"],
        "shards_peak_rss_gb": round(run["peak_rss_gb"], 2),
        "shards_peak_pss_gb": round(run["peak_pss_gb"], 2),
        "shards_images_per_s": round(fastclr_ips(f"shards:{shards}"), 1),
    }
    if not skip_reference:
        row["webdataset_images_per_s"] = round(webdataset_ips(shards), 1)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "fastclr_scale"))
    p.add_argument("--skip-torchvision", action="store_true")
    p.add_argument("--shards", action="store_true", help="also as tar shards, beside WebDataset's own pipeline")
    p.add_argument("--with-eval", action="store_true", help="also a 5-step run with the end-of-run evaluation")
    args = p.parse_args()
    import torch

    sys.path.insert(0, str(ROOT / "src"))
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
        f"commit {commit()}",
        flush=True,
    )
    for n in args.sizes:
        data = build(Path(args.root) / f"n{n}", n)
        cache = Path(tempfile.mkdtemp(prefix="fastclr_cache_"))
        os.environ["FASTCLR_CACHE"] = str(cache)  # a cold listing cache for the first run
        with tempfile.TemporaryDirectory() as out:
            first = start_run(data, Path(out) / "a")
            second = start_run(data, Path(out) / "b")
        row = {
            "images": n,
            "start_first_s": first["start_s"],
            "start_second_s": second["start_s"],
            "peak_rss_gb": round(max(first["peak_rss_gb"], second["peak_rss_gb"]), 2),
            "peak_pss_gb": round(max(first["peak_pss_gb"], second["peak_pss_gb"]), 2),
            "second_peak_rss_gb": round(second["peak_rss_gb"], 2),  # the listing from the cache
            "second_peak_pss_gb": round(second["peak_pss_gb"], 2),
            "fastclr_images_per_s": round(fastclr_ips(data), 1),
        }
        if not args.skip_torchvision:
            row["torchvision_images_per_s"] = round(torchvision_ips(data), 1)
        if args.shards:
            row.update(shard_row(data, args.skip_torchvision))
        if args.with_eval:
            with tempfile.TemporaryDirectory() as out:
                ev = start_run(data, Path(out) / "e", evaluate=True)
            row.update(
                eval_run_total_s=ev["total_s"],
                eval_run_peak_rss_gb=round(ev["peak_rss_gb"], 2),
                eval_run_peak_pss_gb=round(ev["peak_pss_gb"], 2),
            )
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
