#!/usr/bin/env bash
# The GPU check of fastclr, in phases that each fit one command of a short GPU loan (benchmarks/README.md,
# "On a lent GPU", gives the one-time preparation and the exact calls).
#
#   bash benchmarks/gpu_check.sh [--dry-run] [a] [b] [c] [all]        (no phase named: all)
#
# a (<= 4 min on one H100): `pytest -m cuda`, then every command on a CUDA checkpoint: a synthetic JPEG folder
#   (48-96 px images in nested class folders, a few large ones), `fastclr pretrain` for 1 epoch, `embed` of a
#   flat folder, `knn`, `linear` (SGD and --features), `finetune`, `distill`, and the text path offline (a
#   tiny local BERT: pretrain for 3 steps, then `sts`);
# b (<= 5 min): `throughput.py --config cifar10_resnet18` (eager), a cifar10_resnet18 pretraining of EPOCHS_B
#   (30) epochs on the CIFAR-10 JPEGs with kNN / linear evaluation (fewer epochs when the step speed just
#   measured says they would not fit), then `throughput.py --compile` in the time left;
# c (<= 2 min): `gpu_decode.py`: ResNet-50 images/s with CPU vs GPU JPEG decode on synthetic shards.
#
# Results, at most 8 small files directly in $OUT (default /tmp/fastclr-gpu): gpu.txt (machine), summary.txt
# (one line per command), log.txt (progress, the stderr tail of each failure), tests_tail.txt (end of the
# pytest output), a.json, b.json, c.json (each command's line, exit code, seconds, key figure, error). Run
# folders, logs and data go to $WORK (default /tmp/fastclr-gpu-work). A failed command fails its phase (exit
# 1 at the end), and the phase goes on with the commands that do not need its output.
#
# --dry-run (or DEVICE=cpu): every phase on the CPU at CI size (a few dozen images, 1 epoch, tiny batches, 2
# repeats; no torch.compile; the CPU decode path alone), so the script cannot rot before a GPU is lent
# (tests/test_gpu_check.py runs it).
#
# Data: the CIFAR-10 JPEG archive at $CIFAR_ARCHIVE, .gpu/cifar10-jpeg.tar.xz or ../shared/data/ (a dry run
# reads 20 + 10 images per class from it, or synthesises a CIFAR-like folder without it). Packages: when
# `import webdataset, braceexpand` fails, the wheels in .gpu/whl (or .whl) are installed into $SITE
# (/tmp/site) and put on PYTHONPATH. Overrides: PYTHON (python3, or .venv/bin/python when there is one),
# OUT, WORK, EPOCHS_B, PHASE_B_SECONDS (270), WORKERS (8), JOBS (commands side by side in phase a: 4; dry 2).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
ROOT=$PWD

phases=()
dry=0
for arg in "$@"; do
    case $arg in
        --dry-run) dry=1 ;;
        a | b | c) phases+=("$arg") ;;
        all) phases+=(a b c) ;;
        -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument '$arg' (phases: a b c all; --dry-run)" >&2; exit 2 ;;
    esac
done
[ "${#phases[@]}" -gt 0 ] || phases=(a b c)
# each phase once, in the order a b c
run_phases=()
for p in a b c; do
    case " ${phases[*]} " in *" $p "*) run_phases+=("$p") ;; esac
done

if [ "$dry" = 1 ]; then DEVICE=cpu; fi
DEVICE=${DEVICE:-cuda}
[ "$DEVICE" = cpu ] && dry=1
if [ -z "${PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
PYTHON=$(command -v "$PYTHON") || { echo "gpu_check.sh: no Python at '$PYTHON'" >&2; exit 2; }
OUT=${OUT:-/tmp/fastclr-gpu}
WORK=${WORK:-/tmp/fastclr-gpu-work}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
WORK=$(cd "$WORK" && pwd)
rm -f "$OUT/log.txt" "$OUT/summary.txt"
for p in "${run_phases[@]}"; do rm -f "$OUT/$p.json"; done

export OUT WORK
export GPU_CHECK_DEVICE=$DEVICE GPU_CHECK_DRY=$dry
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg TOKENIZERS_PARALLELISM=false
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1  # offline there
export FASTCLR_CACHE=$WORK/cache  # listing caches

log() { echo "$*" | tee -a "$OUT/log.txt"; }

# packages the machine lacks travel as wheels: install them when their import fails
if ! "$PYTHON" -c "import webdataset, braceexpand" 2>/dev/null; then
    for dir in .gpu/whl .whl; do
        if compgen -G "$dir/*.whl" >/dev/null; then
            SITE=${SITE:-/tmp/site}
            if "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
                --target "$SITE" "$dir"/*.whl >>"$OUT/log.txt" 2>&1; then
                export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
                log "installed $(cd "$dir" && echo *.whl) into $SITE"
            else
                log "could not install the wheels of $dir (see above)"
            fi
            break
        fi
    done
fi
export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}  # this checkout's code, whatever is installed

{
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
    "$PYTHON" -c "import os, sys, torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', \
sys.version.split()[0], 'cpus', os.cpu_count(), 'gpu', torch.cuda.get_device_name() if torch.cuda.is_available() \
else None)"
    echo "commit $(git describe --always --dirty 2>/dev/null || echo unknown), phases ${run_phases[*]}," \
        "device $DEVICE, dry run $dry, $(date -u +%FT%TZ)"
} >"$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
if [ "$DEVICE" != cpu ] && ! "$PYTHON" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    log "gpu_check.sh: torch sees no CUDA GPU here; run with --dry-run for the CPU check"
    exit 2
fi

status=0
for p in "${run_phases[@]}"; do
    start=$(date +%s)
    "$PYTHON" "benchmarks/gpu_check/phase_$p.py" || status=1
    [ -f "$OUT/$p.json" ] || { log "phase $p wrote no $p.json"; status=1; }
    log "phase $p: $(($(date +%s) - start)) s wall"
done
"$PYTHON" benchmarks/gpu_check/summary.py "$OUT" >/dev/null || status=1
cat "$OUT/summary.txt"
exit "$status"
