#!/bin/bash
# SimCLR pretraining on 2 nodes x 8 GPUs with SLURM: one torchrun per node, which starts one
# process per GPU. Submit with `sbatch examples/slurm_pretrain.sh`; see docs/distributed.md.
#SBATCH --job-name=fastclr
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1          # one torchrun per node
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=64
#SBATCH --time=24:00:00
#SBATCH --output=%x-%j.out
set -euo pipefail

GPUS_PER_NODE=8
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export OMP_NUM_THREADS=$((SLURM_CPUS_PER_TASK / GPUS_PER_NODE))

# --batch-size is the global batch: 4096 over 16 GPUs is 256 per GPU.
# --max-restarts: a failed worker restarts the group, which resumes from OUT/checkpoints/last.pt.
srun torchrun \
    --nnodes="$SLURM_JOB_NUM_NODES" \
    --nproc_per_node="$GPUS_PER_NODE" \
    --rdzv_id="$SLURM_JOB_ID" \
    --rdzv_backend=c10d \
    --rdzv_endpoint="$HEAD_NODE:29500" \
    --max-restarts=3 \
    -m fastclr pretrain \
    --config imagenet_resnet50 \
    --data /path/to/imagenet \
    --batch-size 4096 \
    --out runs/imagenet_r50                  # the same folder on resubmission: the run resumes
