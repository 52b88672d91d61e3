#!/usr/bin/env bash
# The evaluation protocols on one pretrained checkpoint, each next to the random-init encoder's figure
# for the same protocol: kNN, linear (SGD and L-BFGS features), fine-tuning on 10% and 1% of the labels,
# and SimCLRv2 distillation of the 10% model into a smaller student.
#
#   benchmarks/eval_cifar10.sh CKPT [DATA] [OUT]
#
#   CKPT  OUT/checkpoints/last.pt of e.g. `fastclr pretrain --config cifar10_cpu --data DATA --out runs/cifar10_cpu`
#   DATA  data spec (default: the checkpoint's own data), e.g. the CIFAR-10 JPEG folder with train/ and test/
#   OUT   folder for fine-tuned and distilled models and the JSON lines (default: runs/eval_cifar10)
#
# Epochs are CPU-sized by default; for the papers' schedules set LINEAR_EPOCHS=90 FT10_EPOCHS=30
# FT1_EPOCHS=60 DISTILL_EPOCHS=100. STUDENT picks the student encoder (default resnet_micro, half
# the width of resnet_mini). Every line printed is `NAME <json>`, the command's last stdout line;
# all of them are also written to OUT/results.jsonl.
set -euo pipefail

CKPT=${1:?usage: eval_cifar10.sh CKPT [DATA] [OUT]}
DATA=${2:-}
OUT=${3:-runs/eval_cifar10}
LINEAR_EPOCHS=${LINEAR_EPOCHS:-10}
FT10_EPOCHS=${FT10_EPOCHS:-10}
FT1_EPOCHS=${FT1_EPOCHS:-30}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-10}
STUDENT=${STUDENT:-resnet_micro}
FASTCLR=${FASTCLR:-fastclr}

mkdir -p "$OUT"
: > "$OUT/results.jsonl"
data_flag=()
[[ -n "$DATA" ]] && data_flag=(--data "$DATA")
distill_data=${DATA:-$("${PYTHON:-python}" -c "import sys, torch; print(torch.load(sys.argv[1], map_location='cpu', weights_only=True)['config']['data'])" "$CKPT")}

run() {  # run NAME ARGS...: print and record the command's last stdout line
    local name=$1; shift
    echo "+ $FASTCLR $*" >&2
    local line
    line=$("$FASTCLR" "$@" | tail -n 1)
    echo "$name $line"
    printf '{"name": "%s", "command": "fastclr %s", "result": %s}\n' "$name" "$*" "$line" >> "$OUT/results.jsonl"
}

for init in "" "--random-init"; do
    tag=${init:+random_init_}
    tag=${tag:-simclr_}
    run "${tag}knn" knn --checkpoint "$CKPT" "${data_flag[@]}" --k 20,200 $init
    run "${tag}linear_features" linear --checkpoint "$CKPT" "${data_flag[@]}" --features $init
    run "${tag}linear_sgd" linear --checkpoint "$CKPT" "${data_flag[@]}" --epochs "$LINEAR_EPOCHS" $init
    run "${tag}finetune_10" finetune --checkpoint "$CKPT" "${data_flag[@]}" --label-fraction 0.1 --epochs "$FT10_EPOCHS" --out "$OUT/${tag}finetune_10" $init
    run "${tag}finetune_1" finetune --checkpoint "$CKPT" "${data_flag[@]}" --label-fraction 0.01 --epochs "$FT1_EPOCHS" --out "$OUT/${tag}finetune_1" $init
    run "${tag}distill" distill --teacher "$OUT/${tag}finetune_10/finetuned.pt" --data "$distill_data" --student-arch "$STUDENT" --epochs "$DISTILL_EPOCHS" --out "$OUT/${tag}distill"
done
echo "results: $OUT/results.jsonl" >&2
