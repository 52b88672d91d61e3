"""Phase b of benchmarks/gpu_check.sh (<= 5 minutes on one H100): throughput and a short CIFAR-10 pretraining.

1. ``throughput.py --config cifar10_resnet18`` (eager): fastclr's step against the per-image reference
   pipeline feeding the same step, MFU against a matmul peak measured in the same run.
2. ``fastclr pretrain --config cifar10_resnet18`` on the CIFAR-10 JPEGs, ``EPOCHS_B`` (30) epochs with
   ``--no-resume``, then its kNN / linear evaluation against the random-init encoder. The epochs are cut
   when the step speed measured in 1. says they would not fit in the phase's budget (``PHASE_B_SECONDS``,
   280 s) with the rest: b.json records the epochs planned, run, and why.
3. ``throughput.py --compile``: the same step under torch.compile (compilation excluded from the figure),
   in the time left (skipped, not failed, when under a minute is left).

The dry run: ``cifar10_cpu`` at batch 32 on 256 synthetic images, 1 epoch of resnet_micro on a few CIFAR
images per class (or a synthetic CIFAR-like folder without the archive), and no ``--compile`` (minutes
on a CPU). Writes ``$OUT/b.json``.
"""

from __future__ import annotations

import math
import os
import sys

from common import DEVICE, DRY, PY, ROOT, WORK, Phase, say
from inputs import cifar_folder

BUDGET_S = 280  # of the 300 s the device call gives phase b (benchmarks/README.md, "On a lent GPU")
EPOCHS = int(os.environ.get("EPOCHS_B") or 30)
WORKERS = os.environ.get("WORKERS") or "8"
TRAIN_IMAGES = 50_000
# Estimates for one H100, none measured yet (no GPU lent so far): pretraining's cost besides its steps
# (start-up, decoding the 60,000 JPEGs into memory, checkpoints, kNN and the L-BFGS probe of both encoders),
# the loop's logging and checkpoints over the bare step that throughput.py times, and step 3 (start-up, the
# reference loader, compiling ResNet-18's forward and backward, timing both).
PRETRAIN_OVERHEAD_S = 60.0
STEP_SLACK = 1.15
COMPILE_S = 75.0
MIN_COMPILE_S = 50.0  # less left: step 3 is skipped (not failed)


def throughput_args(compile_: bool) -> list[str]:
    out = WORK / "b" / ("throughput_compiled.json" if compile_ else "throughput.json")
    if DRY:
        args = ["--config", "cifar10_cpu", "--repeats", "2", "--workers", "1", "--batch-size", "16", "--images", "128"]
    else:
        args = ["--config", "cifar10_resnet18", "--repeats", "20", "--workers", WORKERS]
    return [PY, "benchmarks/throughput.py", "--device", DEVICE, *args, "--json", str(out)] + (
        ["--compile"] if compile_ else []
    )


def throughput_figure(r: dict, _stdout: str) -> dict:
    v = r["views"]
    figure = {
        "step_views_per_s": round(v * r["step_ours_images_per_s"]),
        "reference_views_per_s": round(v * r["step_reference_images_per_s"]),
        "step_ratio": round(r["step_ratio"], 2),
        "aug_ratio": round(r["aug_ratio"], 2),
        "mfu": round(r["mfu"], 3),
    }
    if "step_compiled_images_per_s" in r:
        figure["compiled_views_per_s"] = round(v * r["step_compiled_images_per_s"])
        figure["compiled_over_eager"] = round(r["step_compiled_images_per_s"] / r["step_ours_images_per_s"], 2)
    return figure


def pretrain_figure(r: dict, _stdout: str) -> dict:
    e = r["eval"]
    return {
        "epochs": r["epochs"],
        "steps": r["steps"],
        "train_images_per_s": round(r["train_images_per_s"], 1),
        "images_per_s": round(r["images_per_s"], 1),
        "knn_top1": e["knn_top1"],
        "random_init_knn_top1": e["random_init_knn_top1"],
        "linear_top1": e["linear_top1"],
        "random_init_linear_top1": e["random_init_linear_top1"],
    }


def plan_epochs(phase: Phase, measured: dict | None) -> tuple[int, str]:
    """EPOCHS, or fewer when the step speed just measured says they would not fit in the phase's budget."""
    if DRY:
        return 1, "dry run"
    if not measured or not measured.get("step_ours_images_per_s"):
        return EPOCHS, "no step speed measured: the planned epochs"
    epoch_s = STEP_SLACK * TRAIN_IMAGES / measured["step_ours_images_per_s"]
    room = phase.left() - PRETRAIN_OVERHEAD_S - COMPILE_S
    fit = max(1, math.floor(room / epoch_s))
    why = f"about {epoch_s:.1f} s an epoch from the measured step, {room:.0f} s of the budget left for steps"
    return min(EPOCHS, fit), why


def checks(phase: Phase) -> int:
    phase.order = ["throughput (eager)", "cifar10 pretrain", "throughput --compile"]
    data, source = cifar_folder(ROOT, WORK / "cifar10" / ("dry" if DRY else "full"), (10, 5) if DRY else None)
    phase.notes["data"] = source
    say(f"[b] data: {source}")

    eager = phase.run("throughput (eager)", throughput_args(False), 240 if DRY else 150, throughput_figure)
    epochs, why = plan_epochs(phase, eager.get("result") if eager["ok"] else None)
    phase.notes["epochs"] = {"planned": EPOCHS if not DRY else 1, "run": epochs, "why": why}
    say(f"[b] pretraining for {epochs} epochs ({why})")

    args = ["pretrain", "--data", str(data), "--device", DEVICE, "--epochs", str(epochs), "--no-resume"]
    args += ["--out", str(phase.dir / "run")]
    if DRY:
        args += ["--config", "cifar10_cpu", "--batch-size", "16", "--set", "arch=resnet_micro", "--set", "workers=0"]
        args += ["--set", "log_every=1"]
    else:
        args += ["--config", "cifar10_resnet18", "--set", "log_every=50", "--set", f"workers={WORKERS}"]
    # limited by the budget alone: an overrun of the plan costs the compiled timing first
    phase.fastclr("cifar10 pretrain", args, phase.budget, pretrain_figure)

    if DRY:
        phase.skip("throughput --compile", "dry run: torch.compile takes minutes on a CPU")
    elif phase.left() < MIN_COMPILE_S:
        phase.skip("throughput --compile", f"{phase.left():.0f} s left of the phase's {phase.budget:.0f} s budget")
    else:
        phase.run("throughput --compile", throughput_args(True), phase.left(), throughput_figure)
    return phase.finish()


def main() -> int:
    with Phase(
        "b", "throughput (eager, compiled) and a cifar10_resnet18 pretraining with kNN / linear", BUDGET_S
    ) as phase:
        return checks(phase)


if __name__ == "__main__":
    sys.exit(main())
