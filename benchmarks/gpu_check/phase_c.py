"""Phase c of benchmarks/gpu_check.sh (<= 2 minutes on one H100): JPEG decoding on the GPU vs the CPU.

``benchmarks/gpu_decode.py --images 6400 --steps 40``: ResNet-50 pretraining images/s at 224 px on synthetic
ImageNet-size shards, ``decode=cpu`` against ``decode=gpu``. Shards need webdataset and braceexpand: the
shell script installs their wheels from ``.gpu/whl`` (or ``.whl``) when the import fails; without them the
phase fails on the GPU and is skipped in the dry run. The dry run times the CPU path alone at CI size
(resnet_micro, 32 px, 32 images, 2 steps). Writes ``$OUT/c.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from common import DEVICE, DRY, PY, WORK, Phase

BUDGET_S = 105  # of the 120 s the device call gives phase c (benchmarks/README.md, "On a lent GPU")
WORKERS = os.environ.get("WORKERS") or "8"


def figure(_result, _stdout) -> dict:
    runs = json.loads((WORK / "c" / "gpu_decode.json").read_text())["runs"]
    speed = {f"{r['decode']}_decode_images_per_s": r["images_per_s"] for r in runs}
    if "cpu_decode_images_per_s" in speed and "gpu_decode_images_per_s" in speed:
        speed["gpu_over_cpu"] = round(speed["gpu_decode_images_per_s"] / speed["cpu_decode_images_per_s"], 2)
    return speed


def checks(phase: Phase) -> int:
    probe = subprocess.run([PY, "-c", "import webdataset, braceexpand"], capture_output=True, text=True)
    if probe.returncode != 0:
        missing = (probe.stderr.strip().splitlines() or ["import failed"])[-1]
        reason = f"{missing}: put the webdataset and braceexpand wheels in .gpu/whl (benchmarks/README.md)"
        phase.skip("gpu_decode.py", reason, ok=DRY)
        return phase.finish()
    argv = [
        PY,
        "benchmarks/gpu_decode.py",
        "--root",  # outside the phase's folder: a rerun on the same machine reuses the shards
        str(WORK / "decode_shards" / ("dry" if DRY else "full")),
        "--json",
        str(phase.dir / "gpu_decode.json"),
    ]
    if DRY:
        argv += ["--device", DEVICE, "--modes", "cpu", "--arch", "resnet_micro", "--image-size", "32", "--pool", "8"]
        argv += ["--images", "32", "--steps", "2", "--batch-size", "8", "--workers", "1"]
    else:
        argv += ["--device", DEVICE, "--images", "6400", "--steps", "40", "--workers", WORKERS]
    phase.run("gpu_decode.py", argv, phase.budget, figure)
    return phase.finish()


def main() -> int:
    with Phase("c", "ResNet-50 images/s with CPU vs GPU JPEG decode on shards", BUDGET_S) as phase:
        return checks(phase)


if __name__ == "__main__":
    sys.exit(main())
