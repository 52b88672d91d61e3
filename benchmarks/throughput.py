"""Throughput of fastclr's pipeline against a per-image torchvision reference, side by side.

    python benchmarks/throughput.py --config cifar10_cpu            # this machine's CPU
    python benchmarks/throughput.py --config cifar10_resnet18 --device cuda

Measures, in one run and on the same synthetic 32x32 uint8 images (pixel content does not change
the cost of these ops):
  (a) augmentation alone: fastclr's batched augmentation on the device, versus torchvision's
      per-image transforms (RandomResizedCrop, flip, ColorJitter p=0.8, grayscale p=0.2, ToTensor,
      Normalize) in a DataLoader with workers, two views per image;
  (b) the full pretraining step: fastclr (device-resident uint8 data, batched augmentation,
      ``Batch.views`` + ``train_step`` of the training loop, no host synchronisation in the step)
      versus the reference pipeline feeding the same step: same model, loss, optimizer, precision
      (bf16 autocast where supported) and memory format (channels_last), so the ratio isolates the
      data pipeline.
  (c) aten op counts, a proxy for kernel launches (on a GPU a 32-px step launches about as much time
      as it computes): the aten operators that the augmentation of all views (``Batch.views`` and the
      channels_last copy) and one whole step (those views + ``train_step``: forward, loss, backward,
      optimizer) call, counted by a TorchDispatchMode on the CPU with the accelerator's code path
      (``augment.gathers`` False: every sample computed and selected, all views in one batch, no
      ``nonzero``). ``aten_kernel_ops_*`` leaves out the view ops (view, select, unsqueeze, ...), which
      launch nothing. Deterministic, and the same at any batch size; ``--ops-only`` prints just these.
Each figure is the median over repeats after a warm-up. MFU = counted FLOPs of the step / time /
the peak measured in the same run by large matrix products in the step's precision (on a GPU too:
a datasheet peak is a ceiling no kernel reaches). Prints machine, torch version and commit.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from unittest import mock

import torch
from provenance import commit
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader, Dataset

from fastclr import config as C
from fastclr.data.loaders.base import RawImages
from fastclr.method import augment as augment_module
from fastclr.method.augment import MEAN, STD, augment
from fastclr.method.lars import build_optimizer, scaled_lr
from fastclr.train.precision import autocast, pick_device, resolve
from fastclr.train.restore import build_model
from fastclr.train.step import augment_config, contrastive_loss, objective, train_step, view_recipe


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return times


class PILPairs(Dataset):
    """The reference: PIL images in memory, two torchvision-transformed views per item."""

    def __init__(self, images: torch.Tensor, cfg: C.Config):
        from PIL import Image
        from torchvision import transforms as T

        self.images = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
        s = cfg.color_strength
        self.t = T.Compose(
            [
                T.RandomResizedCrop(cfg.image_size, scale=(cfg.min_scale, 1.0)),
                T.RandomHorizontalFlip(),
                T.RandomApply([T.ColorJitter(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.ToTensor(),
                T.Normalize(MEAN, STD),
            ]
        )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        im = self.images[i]
        return self.t(im), self.t(im)


def reference_loader(images, cfg, workers, batch, pin: bool = False):
    return DataLoader(
        PILPairs(images, cfg),
        batch_size=batch,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
        pin_memory=pin,
    )


def batches_per_second(loader, count):
    it = iter(loader)
    next(it)  # warm-up: workers started
    t = time.perf_counter()
    got = 0
    for _ in range(count):
        try:
            next(it)
        except StopIteration:
            it = iter(loader)
            next(it)
        got += 1
    return got / (time.perf_counter() - t)


def step_flops(model, x, cfg, device, precision):
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        with autocast(device, precision):
            _, z = model(x)
        contrastive_loss(z, cfg, 0).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def matmul_peak(device, precision, n: int | None = None) -> tuple[float, str]:
    """The ceiling, measured: the best of several large square matrix products in the step's precision.

    n = 8192 on a GPU (smaller products leave its tensor cores idle part of the time), 4096 on a CPU.
    """
    n = n or (8192 if device.type == "cuda" else 4096)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 8
    return 2 * n**3 / min(timed(lambda: a @ b, device, 3, reps)), f"measured {precision} matmul {n}x{n}"


class OpCounter(TorchDispatchMode):
    """Counts every aten operator call below autograd (forward, backward and optimizer ops alike)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops = 0
        self.view_ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        self.view_ops += bool(getattr(func, "is_view", False))
        return func(*args, **(kwargs or {}))


def count_ops(cfg, precision: str) -> dict[str, int]:
    """aten op counts of the augmentation (all views) and of one step, on the CPU, accelerator code path.

    ``augment.gathers`` is forced False (the choice on a GPU), so the colour ops take their sync-free
    form; one untimed step first, so constants already sit on the device as in a training run.
    """
    cpu = torch.device("cpu")
    B = cfg.batch_size
    images = torch.randint(0, 256, (B, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    index = torch.arange(B)
    recipe = view_recipe(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).to(memory_format=torch.channels_last)
    opt = build_optimizer(model, cfg.optimizer, scaled_lr(cfg.lr, B, cfg.lr_rule), cfg.weight_decay)

    def views():
        return RawImages(index, images).views(recipe, 0).contiguous(memory_format=torch.channels_last)

    def step(i):
        train_step(model, opt, views(), objective(cfg), i, cpu, precision)

    res = {}
    with mock.patch.object(augment_module, "gathers", lambda device: False):
        step(0)
        for name, fn in (("augment", views), ("step", lambda: step(1))):
            counter = OpCounter()
            with counter:
                fn()
            res[f"aten_ops_{name}"] = counter.ops
            res[f"aten_kernel_ops_{name}"] = counter.ops - counter.view_ops
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="cifar10_cpu")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--workers", type=int, default=2, help="reference DataLoader workers")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=4096, help="synthetic images held in memory")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument(
        "--compile", action="store_true", help="also time the fastclr step with torch.compile (compilation excluded)"
    )
    ap.add_argument("--ops-only", action="store_true", help="only count the aten ops (c), no timing")
    args = ap.parse_args()

    cfg = C.build_config(args.config, {"batch_size": args.batch_size}, [])
    if args.ops_only:
        cpu_precision = resolve(cfg.precision, torch.device("cpu"))
        ops = {"config": args.config, "torch": torch.__version__, "batch": cfg.batch_size, "views": cfg.views}
        ops["precision"] = cpu_precision
        ops.update(count_ops(cfg, cpu_precision))
        if args.json:
            Path(args.json).write_text(json.dumps(ops, indent=2))
        print(json.dumps(ops))
        return
    device = pick_device(args.device)
    precision = resolve(cfg.precision, device)
    B, V = cfg.batch_size, cfg.views
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.images, 3, 32, 32), dtype=torch.uint8, generator=g)
    dev_images = images.to(device)
    aug = augment_config(cfg)
    index = torch.arange(B, device=device)

    # (a) augmentation alone
    def ours_aug():
        for v in range(V):
            augment(dev_images[:B], index, seed=0, epoch=0, view=v, cfg=aug)

    ours_aug_s = statistics.median(timed(ours_aug, device, 2, args.repeats))
    ref = reference_loader(images, cfg, args.workers, B, pin=device.type == "cuda")
    ref_aug_bps = statistics.median([batches_per_second(ref, 3) for _ in range(max(2, args.repeats // 2))])

    # (b) full step: the training loop's own Batch.views + train_step
    torch.manual_seed(0)
    fast = build_model(cfg).to(device).to(memory_format=torch.channels_last)
    fast_opt = build_optimizer(fast, cfg.optimizer, scaled_lr(cfg.lr, B, cfg.lr_rule), cfg.weight_decay)
    perm = torch.randperm(args.images, device=device)
    state = {"b": 0}

    goal = objective(cfg)  # the loss and the views' layout, built once as the training loop does

    def ours_step(net=fast):
        lo = (state["b"] * B) % (args.images - B)
        state["b"] += 1
        idx = perm[lo : lo + B]
        x = RawImages(idx, dev_images[idx]).views(view_recipe(cfg), 0).contiguous(memory_format=torch.channels_last)
        train_step(net, fast_opt, x, goal, state["b"], device, precision)

    ours_step_s = statistics.median(timed(ours_step, device, 2, args.repeats))
    compiled_step_s = None
    if args.compile:
        compiled = torch.compile(fast)
        compiled_step_s = statistics.median(timed(lambda: ours_step(compiled), device, 3, args.repeats))

    # the reference pipeline feeding the same step: same precision and memory format
    torch.manual_seed(0)
    slow = build_model(cfg).to(device).to(memory_format=torch.channels_last)
    slow_opt = build_optimizer(slow, cfg.optimizer, scaled_lr(cfg.lr, B, cfg.lr_rule), cfg.weight_decay)
    ref_it = iter(ref)

    def ref_step():
        nonlocal ref_it
        try:
            a, b = next(ref_it)
        except StopIteration:
            ref_it = iter(ref)
            a, b = next(ref_it)
        x = torch.cat([a, b]).to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        train_step(slow, slow_opt, x, goal, 0, device, precision)

    ref_step_s = statistics.median(timed(ref_step, device, 2, args.repeats))

    x = torch.cat([augment(dev_images[:B], index, seed=0, epoch=0, view=v, cfg=aug) for v in range(V)]).contiguous(
        memory_format=torch.channels_last
    )
    flops = step_flops(fast, x, cfg, device, precision)
    ops = count_ops(cfg, resolve(cfg.precision, torch.device("cpu")))
    name = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or platform.machine()
    peak, peak_src = matmul_peak(device, precision)

    res = {
        "config": args.config,
        "device": f"{device.type} ({name}, {torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "commit": commit(),
        "batch": B,
        "views": V,
        "precision": precision,
        "aug_ours_views_per_s": B * V / ours_aug_s,
        "aug_reference_views_per_s": ref_aug_bps * B * V,
        "step_ours_images_per_s": B / ours_step_s,
        "step_reference_images_per_s": B / ref_step_s,
        "step_flops": flops,
        "mfu": flops / ours_step_s / peak,
        "peak_flops": peak,
        "peak_source": peak_src,
        **ops,
    }
    if compiled_step_s is not None:
        res["step_compiled_images_per_s"] = B / compiled_step_s
    res["aug_ratio"] = res["aug_ours_views_per_s"] / res["aug_reference_views_per_s"]
    res["step_ratio"] = res["step_ours_images_per_s"] / res["step_reference_images_per_s"]
    print(
        f"machine     {res['device']}, torch {res['torch']}, commit {res['commit']}, {args.config}, batch {B} x {V} "
        f"views, {precision}",
        file=sys.stderr,
    )
    print(
        f"augment     fastclr {res['aug_ours_views_per_s']:10.0f} views/s   reference "
        f"{res['aug_reference_views_per_s']:10.0f} views/s   ratio {res['aug_ratio']:.1f}x",
        file=sys.stderr,
    )
    print(
        f"train step  fastclr {res['step_ours_images_per_s']:10.0f} img/s     reference "
        f"{res['step_reference_images_per_s']:10.0f} img/s     ratio {res['step_ratio']:.1f}x",
        file=sys.stderr,
    )
    print(
        f"            fastclr {res['step_ours_images_per_s'] * V:10.0f} views/s, {flops / B / V / 1e9:.2f} "
        f"GFLOP/view, MFU {100 * res['mfu']:.1f}% of {peak / 1e12:.2f} TFLOP/s ({peak_src})",
        file=sys.stderr,
    )
    print(
        f"aten ops    augment {ops['aten_ops_augment']} ({ops['aten_kernel_ops_augment']} not views), "
        f"step {ops['aten_ops_step']} ({ops['aten_kernel_ops_step']} not views): CPU, accelerator colour path",
        file=sys.stderr,
    )
    if compiled_step_s is not None:
        print(
            f"            fastclr + torch.compile {res['step_compiled_images_per_s']:10.0f} img/s "
            f"({res['step_compiled_images_per_s'] / res['step_ours_images_per_s']:.2f}x eager)",
            file=sys.stderr,
        )
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
    print(json.dumps(res))


if __name__ == "__main__":
    main()
