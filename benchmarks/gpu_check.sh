#!/usr/bin/env bash
# Every GPU check of fastclr in one command (budget: under 9 minutes on one H100):
#   1. the CUDA-only tests (`pytest -m cuda`): the training step under torch.cuda.set_sync_debug_mode("error"),
#      GPU vs CPU augmentation, kNN on the GPU, resume of a CUDA run, SyncBatchNorm over NCCL under torchrun;
#   2. throughput of cifar10_resnet18: fastclr's step vs the per-image reference pipeline feeding the same
#      step (same precision, same channels_last), MFU against a matmul peak measured in the same run;
#   3. a 100-epoch cifar10_resnet18 pretraining on the CIFAR-10 JPEGs with --no-resume (a rerun starts over),
#      with kNN and linear evaluation;
#   4. a table: training images/s (steps only: no checkpoint, monitor or evaluation time) beside the
#      end-to-end figure and the wall time.
#
# Usage, from the repository root:   bash benchmarks/gpu_check.sh [EPOCHS]
# The CIFAR-10 JPEG archive is looked for at $CIFAR_ARCHIVE, shared-data/, shared/data/ and ../shared/data/.
# Results land in ${OUT:-/tmp/fastclr-gpu}: gpu.txt, cuda_tests.txt, throughput.json, pretrain.json, summary.txt.
# Overrides (a CPU dry run of the script uses them): DEVICE (cuda), CONFIG (cifar10_resnet18),
# PRETRAIN_SETS ("key=value ..." added to the pretraining), THROUGHPUT_ARGS, REPEATS (20), WORKERS (8),
# COMPILE=1 (also time torch.compile: about a minute more), SKIP_TESTS=1.
set -euo pipefail
EPOCHS=${1:-100}
OUT=${OUT:-/tmp/fastclr-gpu}
DATA=${DATA:-/tmp/cifar10}
DEVICE=${DEVICE:-cuda}
CONFIG=${CONFIG:-cifar10_resnet18}
REPEATS=${REPEATS:-20}
WORKERS=${WORKERS:-8}
mkdir -p "$OUT" "$DATA"
export PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD/src:${PYTHONPATH:-}  # this checkout's code, whatever is installed
status=0

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } | tee "$OUT/gpu.txt"
python3 -c "import torch, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0])" | tee -a "$OUT/gpu.txt"

if [ ! -d "$DATA/train" ]; then
    ARCHIVE=""
    for a in "${CIFAR_ARCHIVE:-}" shared-data/cifar10-jpeg.tar.xz shared/data/cifar10-jpeg.tar.xz ../shared/data/cifar10-jpeg.tar.xz; do
        if [ -n "$a" ] && [ -f "$a" ]; then ARCHIVE=$a; break; fi
    done
    [ -n "$ARCHIVE" ] || { echo "CIFAR-10 JPEG archive not found: set CIFAR_ARCHIVE" >&2; exit 2; }
    tar -xJf "$ARCHIVE" -C "$DATA"
fi

# 1. CUDA-only tests (they skip on a machine without CUDA)
if [ "${SKIP_TESTS:-0}" != 1 ]; then
    set +e
    python3 -m pytest -q -m cuda -p no:cacheprovider tests > "$OUT/cuda_tests.txt" 2>&1
    tests_rc=$?
    set -e
    tail -n 3 "$OUT/cuda_tests.txt"
    [ "$tests_rc" = 0 ] || status=1
fi

# 2. throughput: the lean step vs the reference pipeline feeding the same step
# shellcheck disable=SC2086
python3 benchmarks/throughput.py --config "$CONFIG" --device "$DEVICE" --repeats "$REPEATS" --workers "$WORKERS" \
    ${COMPILE:+--compile} ${THROUGHPUT_ARGS:-} --json "$OUT/throughput.json" > /dev/null

# 3. pretraining from step 0 (--no-resume), then kNN and linear evaluation
sets=(--set log_every=50)
for kv in ${PRETRAIN_SETS:-}; do sets+=(--set "$kv"); done
start=$(date +%s)
python3 -m fastclr pretrain --config "$CONFIG" --data "$DATA" --device "$DEVICE" --epochs "$EPOCHS" --out "$OUT/run" \
    --no-resume "${sets[@]}" | tail -n 1 > "$OUT/pretrain.json"
end=$(date +%s)

# 4. the table
python3 - "$OUT" "$((end - start))" "${tests_rc:-skipped}" <<'PY' | tee "$OUT/summary.txt"
import json, sys
out, wall, tests = sys.argv[1], int(sys.argv[2]), sys.argv[3]
t = json.load(open(f"{out}/throughput.json"))
p = json.loads(open(f"{out}/pretrain.json").read())
e = p.get("eval", {})
nan = float("nan")
summary = "skipped"
if tests != "skipped":
    lines = [ln for ln in open(f"{out}/cuda_tests.txt").read().splitlines() if ln.strip()]
    summary = (lines[-1] if lines else "no output") + ("" if tests == "0" else f" (exit {tests})")
rows = [
    ("device", t["device"]), ("torch", t["torch"]), ("commit", t["commit"]),
    ("CUDA tests (pytest -m cuda)", summary),
    ("augment views/s (fastclr / reference)", f"{t['aug_ours_views_per_s']:.0f} / {t['aug_reference_views_per_s']:.0f} ({t['aug_ratio']:.1f}x)"),
    (f"step views/s (fastclr / reference, both {t['precision']} channels_last)",
     f"{t['views'] * t['step_ours_images_per_s']:.0f} / {t['views'] * t['step_reference_images_per_s']:.0f} ({t['step_ratio']:.1f}x)"),
    ("step views/s with torch.compile", f"{t['views'] * t.get('step_compiled_images_per_s', nan):.0f}"),
    ("MFU", f"{100 * t['mfu']:.1f}% of {t['peak_flops'] / 1e12:.3g} TFLOP/s ({t['peak_source']})"),
    ("pretrain epochs / wall s (incl. startup, eval)", f"{p.get('epochs', nan):.0f} / {wall}"),
    ("pretrain images/s: training steps only", f"{p.get('train_images_per_s', nan):.0f}"),
    ("pretrain images/s: end to end (checkpoints incl.)", f"{p.get('images_per_s', nan):.0f}"),
    ("kNN top-1 (k=200) / random init", f"{e.get('knn_top1', nan):.4f} / {e.get('random_init_knn_top1', nan):.4f}"),
    ("linear top-1 / random init", f"{e.get('linear_top1', nan):.4f} / {e.get('random_init_linear_top1', nan):.4f}"),
]
for k, v in rows:
    print(f"{k:60s} {v}")
PY
python3 benchmarks/gpu_decode.py --images 6400 --steps 40 --json "$OUT/gpu_decode.json"  # shards: ResNet-50 img/s with CPU vs GPU JPEG decode
exit "$status"
