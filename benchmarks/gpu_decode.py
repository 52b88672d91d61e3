"""JPEG decoding on the GPU vs the CPU: ResNet-50 pretraining images/s on ImageNet-size synthetic shards.

Writes ``--images`` synthetic photos (short side 375-500 px, JPEG quality 90, ~110 KB: ImageNet's
typical file) as tar shards with ``fastclr prepare --format shards`` (once, in ``--root``), then
runs ``fastclr pretrain --data shards:DIR`` (resnet50, 224 px, bf16, eval off) twice, with
``--set decode=cpu`` (loader workers decode and crop with PIL) and ``--set decode=gpu`` (workers
only read bytes; nvJPEG decodes on the device, crops there), and prints one JSON line per path
and the ratio. The images/s is the run's own figure (every step after the first, the whole
pretraining step included), so it is what training gets.

    python benchmarks/gpu_decode.py --images 12800 --steps 60 --workers 8 --json /tmp/gpu_decode.json

``benchmarks/gpu_check.sh`` runs it as its phase c. Its dry run on a CPU times the CPU path alone at CI size:
``--device cpu --modes cpu --arch resnet_micro --image-size 32 --pool 8 --images 32 --steps 2``. Exits 1 when
a run fails.
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
from provenance import commit

ROOT = Path(__file__).resolve().parents[1]


def build(root: Path, count: int, classes: int = 100, distinct: int = 200) -> Path:
    """``count`` ImageNet-size JPEGs (``distinct`` different ones) in ``root/src/train/<class>/``, as shards in
    ``root/shards``."""
    from PIL import Image

    shards = root / "shards"
    if (shards / "index.json").is_file():
        return shards
    rng = np.random.default_rng(0)
    pool = []
    for _ in range(distinct):
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
    from fastclr.data.write.shards import write_shards

    write_shards(str(root / "src"), shards)
    return shards


def run(
    shards: Path,
    decode: str,
    steps: int,
    batch: int,
    workers: int,
    device: str = "cuda",
    arch: str = "resnet50",
    image_size: int = 224,
) -> dict:
    """One short pretraining run; its final JSON line."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "fastclr", "pretrain", "--data", f"shards:{shards}", "--out", out, "--no-resume"]
        cmd += ["--max-steps", str(steps), "--batch-size", str(batch), "--device", device]
        for s in (f"arch={arch}", "cifar_stem=false", f"image_size={image_size}", "eval=false", f"workers={workers}",
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
    p.add_argument("--device", default="cuda", help="training device (cpu: a dry run of the CPU path)")
    p.add_argument("--modes", default="cpu,gpu", help="decode paths to time, comma separated")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--image-size", type=int, default=224, dest="image_size")
    p.add_argument("--pool", type=int, default=200, help="distinct JPEGs the images repeat")
    args = p.parse_args()
    import torch

    shards = build(Path(args.root), args.images, distinct=args.pool)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rows = [
        run(shards, mode, args.steps, args.batch, args.workers, args.device, args.arch, args.image_size)
        for mode in modes
    ]
    info = {
        "device": torch.cuda.get_device_name()
        if args.device.startswith("cuda") and torch.cuda.is_available()
        else "cpu",
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "workers": args.workers,
        "commit": commit(),
        "images": args.images,
    }
    for row in rows:
        print(json.dumps({**info, **row}), flush=True)
    speed = {r["decode"]: r["images_per_s"] for r in rows if "images_per_s" in r}
    if "cpu" in speed and "gpu" in speed:
        print(f"gpu / cpu decode: {speed['gpu'] / speed['cpu']:.2f}x", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({**info, "runs": rows}, indent=2))
    if len(speed) < len(rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
