"""JPEG decoding on the GPU vs the CPU: ResNet-50 pretraining images/s on ImageNet-size synthetic shards.

Writes ``--images`` synthetic photos (short side 375-500 px, JPEG quality 90, ~110 KB: ImageNet's
typical file) as tar shards with ``fastclr prepare --format shards`` (once, in ``--root``), then
runs ``fastclr pretrain --data shards:DIR`` (resnet50, 224 px, bf16, eval off) twice, with
``--set decode=cpu`` (loader workers decode and crop with PIL) and ``--set decode=gpu`` (workers
only read bytes; nvJPEG decodes on the device, crops there), and prints one JSON line per path
and the ratio. The images/s is the run's own figure (every step after the first, the whole
pretraining step included), so it is what training gets.

    python benchmarks/gpu_decode.py --images 12800 --steps 60 --workers 8 --json /tmp/gpu_decode.json

``benchmarks/gpu_check.sh`` calls it at its end.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, count: int, classes: int = 100) -> Path:
    """``count`` ImageNet-size JPEGs (200 distinct) in ``root/src/train/<class>/``, as shards in ``root/shards``."""
    from PIL import Image

    shards = root / "shards"
    if (shards / "index.json").is_file():
        return shards
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(200):
        h = int(rng.integers(375, 501))
        w = int(h * rng.uniform(1.2, 1.5))
        small = rng.integers(0, 256, (h // 16, w // 16, 3), dtype=np.uint8)
        noise = rng.integers(-12, 13, (h, w, 3))
        px = np.clip(np.asarray(Image.fromarray(small).resize((w, h), Image.BICUBIC), dtype=np.int64) + noise, 0, 255)
        buf = io.BytesIO()
        Image.fromarray(px.astype(np.uint8)).save(buf, "JPEG", quality=90)
        pool.append(buf.getvalue())
    for i in range(count):
        folder = root / "src" / "train" / f"n{i % classes:08d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:07d}.jpg").write_bytes(pool[i % len(pool)])
    sys.path.insert(0, str(ROOT / "src"))
    from fastclr.data.shard_writer import write_shards

    write_shards(str(root / "src"), shards)
    return shards


def run(shards: Path, decode: str, steps: int, batch: int, workers: int) -> dict:
    """One short pretraining run; its final JSON line."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fastclr", "pretrain", "--data", f"shards:{shards}", "--out", out, "--no-resume"]
        cmd += ["--max-steps", str(steps), "--batch-size", str(batch), "--device", "cuda"]
        for s in ("arch=resnet50", "cifar_stem=false", "image_size=224", "eval=false", f"workers={workers}",
                  f"decode={decode}", "precision=bf16", "channels_last=true", "log_every=10"):  # fmt: skip
            cmd += ["--set", s]
        env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{os.environ.get('PYTHONPATH', '')}"}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            return {"decode": decode, "error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else "failed"}
        result = json.loads(r.stdout.strip().splitlines()[-1])
        return {"decode": decode, "images_per_s": round(result["images_per_s"], 1), "steps": result["steps"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=12_800)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--batch-size", type=int, default=256, dest="batch")
    p.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    p.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "fastclr_gpu_decode"))
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args()
    import torch

    shards = build(Path(args.root), args.images)
    rows = [run(shards, mode, args.steps, args.batch, args.workers) for mode in ("cpu", "gpu")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    info = {
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "commit": commit.stdout.strip(),
        "images": args.images,
    }
    for row in rows:
        print(json.dumps({**info, **row}), flush=True)
    if all("images_per_s" in r for r in rows):
        print(f"gpu / cpu decode: {rows[1]['images_per_s'] / rows[0]['images_per_s']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "runs": rows}, indent=2))


if __name__ == "__main__":
    main()
