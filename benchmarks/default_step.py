"""CPU cost of one step of the default digits run, per choice: image size, encoder, memory format.

    OMP_NUM_THREADS=1 python benchmarks/default_step.py [--precision fp32] [--steps 8] [--repeats 2]

Each setting builds the digits preset with one field changed, then times full training steps
(views, forward, NT-Xent, backward, LARS) on batch 128. The figure is **CPU time** of the process
(``time.process_time``, one thread), the median of the steps after two warm-up steps: it does not
depend on what else the machine runs, so it compares settings fairly on a shared machine. On an
idle 2-core CPU the wall time of a run is about this CPU time (two threads share the work).
``--precision fp32`` is the float32 path of CPUs without bf16 (AVX2 laptops); on a CPU with
AVX512-BF16/AMX it is a fair proxy for that path.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time

import torch

from fastclr import config
from fastclr.data import datasets
from fastclr.data.loaders.base import RawImages
from fastclr.method.lars import build_optimizer
from fastclr.train.restore import build_model
from fastclr.train.step import objective, train_step, view_recipe

SETTINGS = (
    {"image_size": 16, "arch": "resnet_mini", "channels_last": True},  # the previous default
    {"image_size": 16, "arch": "resnet_mini", "channels_last": False},
    {"image_size": 8, "arch": "resnet_mini", "channels_last": True},
    {"image_size": 8, "arch": "resnet_mini", "channels_last": False},
    {"image_size": 16, "arch": "resnet_micro", "channels_last": True},
    {"image_size": 8, "arch": "resnet_micro", "channels_last": True},  # the default
    {"image_size": 8, "arch": "resnet_micro", "channels_last": False},
)


def step_cpu_seconds(cfg: config.Config, steps: int) -> float:
    """Median CPU seconds of one training step (after two warm-up steps) for ``cfg``."""
    images = datasets.load("digits", cfg.image_size).pretrain.images
    model = build_model(cfg)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optimizer, 0.5, cfg.weight_decay, cfg.momentum, cfg.trust_coefficient)
    index, device, recipe = torch.arange(cfg.batch_size), torch.device("cpu"), view_recipe(cfg)
    goal = objective(cfg)
    model.train()
    times = []
    for step in range(steps + 2):
        t = time.process_time()
        x = RawImages(index, images[index]).views(recipe, 0)
        if cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        train_step(model, opt, x, goal, step, device, cfg.precision)
        times.append(time.process_time() - t)
    return statistics.median(times[2:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"{platform.processor() or platform.machine()}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    base = config.build_config("digits", {}, [])
    rows = {i: [] for i in range(len(SETTINGS))}
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits every setting alike
        for i, setting in enumerate(SETTINGS):
            cfg = dataclasses.replace(base, precision=args.precision, **setting)
            rows[i].append(step_cpu_seconds(cfg, args.steps))
    print("| image size | encoder | channels_last | CPU ms per step | 440 steps (s) |")
    print("| --- | --- | --- | --- | --- |")
    for i, s in enumerate(SETTINGS):
        ms = 1000 * statistics.mean(rows[i])
        print(f"| {s['image_size']} | {s['arch']} | {s['channels_last']} | {ms:.0f} | {0.44 * ms:.0f} |")


if __name__ == "__main__":
    main()
