"""Peak memory of one training step with and without the gradient cache (--chunk-size), on CPU.

Method: every (variant, run) is a fresh Python process that builds the model and the views, reads
its peak resident set size (getrusage ru_maxrss), runs one full step (forward, loss, backward,
optimizer), and reads the peak again. The reported number is the growth of the peak caused by the
step, so the interpreter, torch and the inputs cancel out. Time is the step's wall time (one
step, after a warm-up step at batch 16 of the same variant).

    python benchmarks/chunk_memory.py --batch 1024 --chunks 0 64 256 --runs 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from provenance import commit, cpu_name


def one_run(batch: int, chunk: int, image_size: int, threads: int) -> dict:
    import torch

    from fastclr.config import Config
    from fastclr.method.lars import build_optimizer
    from fastclr.train.restore import build_model
    from fastclr.train.step import objective, train_step

    torch.set_num_threads(threads)
    cfg = dataclasses.replace(Config(), precision="fp32", chunk_size=chunk, image_size=image_size)
    torch.manual_seed(0)
    model = build_model(cfg)
    opt = build_optimizer(model, "lars", 0.1, 1e-6)
    cpu = torch.device("cpu")
    warm = torch.randn(cfg.views * 16, 3, image_size, image_size)
    train_step(model, opt, warm, objective(dataclasses.replace(cfg, chunk_size=min(chunk, 16))), 0, cpu, "fp32")
    x = torch.randn(cfg.views * batch, 3, image_size, image_size)  # [V*B, 3, S, S] view-major
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    train_step(model, opt, x, objective(cfg), 1, cpu, "fp32")
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_growth_mib": (after - before) / 1024, "peak_rss_mib": after / 1024, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=1024, help="global batch B (V = 2 views each)")
    ap.add_argument(
        "--chunks", type=int, nargs="+", default=[0, 64, 256], help="chunk sizes in views; 0 is the one-pass step"
    )
    ap.add_argument("--image-size", type=int, default=16)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # internal: a single measurement
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.batch, args.chunks[0], args.image_size, args.threads)))
        return
    import torch

    print(
        f"# {cpu_name()}, {os.cpu_count()} cores, {args.threads} thread(s); torch {torch.__version__}; python "
        f"{platform.python_version()}; commit {commit()}"
    )
    print(
        f"# resnet_mini, {args.image_size}x{args.image_size}, batch {args.batch} x 2 views, fp32, LARS; {args.runs} "
        "runs each, mean +- std"
    )
    print("| chunk size | peak growth of one step (MiB) | step time (s) |")
    print("| --- | --- | --- |")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    for chunk in args.chunks:
        runs = []
        for _ in range(args.runs):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                "--batch",
                str(args.batch),
                "--chunks",
                str(chunk),
                "--image-size",
                str(args.image_size),
                "--threads",
                str(args.threads),
            ]
            out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
        label = "off (one pass)" if chunk == 0 else str(chunk)
        print(f"| {label} | {_mean_std(runs, 'peak_growth_mib', 1)} | {_mean_std(runs, 'seconds', 2)} |", flush=True)


def _mean_std(runs: list[dict], key: str, digits: int) -> str:
    values = [r[key] for r in runs]
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} +- {sd:.{digits}f}"


if __name__ == "__main__":
    main()
