#!/usr/bin/env bash
# All GPU checks of fastclr in one run (under 8 minutes on one H100):
#   1. throughput of cifar10_resnet18 (batched augmentation and full step vs the per-image reference),
#   2. a 100-epoch cifar10_resnet18 pretraining on the CIFAR-10 JPEGs, with kNN and linear evaluation,
#   3. a short table at the end.
# Usage, from the repository root, with the CIFAR-10 JPEG archive copied to ./shared-data/ (or
# CIFAR_ARCHIVE pointing at it):   bash benchmarks/gpu_check.sh [EPOCHS]
# Results land in ${OUT:-/tmp/fastclr-gpu}: throughput.json, pretrain.json, the run folder's metrics.
set -euo pipefail
EPOCHS=${1:-100}
OUT=${OUT:-/tmp/fastclr-gpu}
ARCHIVE=${CIFAR_ARCHIVE:-shared-data/cifar10-jpeg.tar.xz}
mkdir -p "$OUT" /tmp/cifar10
export PYTHONUNBUFFERED=1
python3 -c "import fastclr" 2>/dev/null || export PYTHONPATH=$PWD/src:${PYTHONPATH:-}  # run from the checkout, no install
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
[ -d /tmp/cifar10/train ] || tar -xJf "$ARCHIVE" -C /tmp/cifar10

python3 benchmarks/throughput.py --config cifar10_resnet18 --device cuda --repeats 20 --workers 8 --compile --json "$OUT/throughput.json" > /dev/null

start=$(date +%s)
python3 -m fastclr pretrain --config cifar10_resnet18 --data /tmp/cifar10 --epochs "$EPOCHS" --out "$OUT/run" --set log_every=50 | tail -n 1 > "$OUT/pretrain.json"
end=$(date +%s)

python3 - "$OUT" "$((end - start))" <<'PY'
import json, sys
out, wall = sys.argv[1], int(sys.argv[2])
t = json.load(open(f"{out}/throughput.json"))
p = json.loads(open(f"{out}/pretrain.json").read())
e = p.get("eval", {})
rows = [
    ("device", t["device"]), ("torch", t["torch"]), ("commit", t["commit"]),
    ("augment views/s (fastclr / reference)", f"{t['aug_ours_views_per_s']:.0f} / {t['aug_reference_views_per_s']:.0f} ({t['aug_ratio']:.1f}x)"),
    ("step views/s (fastclr / reference)", f"{2 * t['step_ours_images_per_s']:.0f} / {2 * t['step_reference_images_per_s']:.0f} ({t['step_ratio']:.1f}x)"),
    ("step views/s with torch.compile", f"{2 * t.get('step_compiled_images_per_s', float('nan')):.0f}"),
    ("MFU", f"{100 * t['mfu']:.1f}% ({t['peak_source']})"),
    ("pretrain epochs / wall s (incl. eval)", f"{p['epochs']:.0f} / {wall}"),
    ("pretrain images/s", f"{p['images_per_s']:.0f}"),
    ("kNN top-1 (k=200) / random init", f"{e.get('knn_top1', float('nan')):.4f} / {e.get('random_init_knn_top1', float('nan')):.4f}"),
    ("linear top-1 / random init", f"{e.get('linear_top1', float('nan')):.4f} / {e.get('random_init_linear_top1', float('nan')):.4f}"),
]
for k, v in rows:
    print(f"{k:42s} {v}")
PY
python3 benchmarks/gpu_decode.py --images 6400 --steps 40 --json "$OUT/gpu_decode.json"  # shards: ResNet-50 img/s with CPU vs GPU JPEG decode
