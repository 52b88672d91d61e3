"""SimCLR pretraining: the loop, the step, and the evaluation at the end.

Single process: ``fastclr pretrain``. The step: V augmented views of each image (batched, on
the device), one forward pass of the concatenated views (BN sees all of them, as in the
reference code), NT-Xent (or a variant) in float32, LARS with warm-up + cosine, per step.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch

from . import checkpoint, config, datasets
from .errors import UserError
from .features import extract
from .knn import knn_accuracy
from .lars import build_optimizer, scaled_lr, set_lr
from .loader import InMemoryLoader
from .model import SimCLR
from .precision import pick_device, resolve
from .probe import linear_probe
from .schedule import lr_at
from .step import augment_config, build_model, make_views, train_step


def evaluate_encoder(model: SimCLR, data: datasets.DataSplits, cfg: config.Config, device, precision: str) -> dict[str, float]:
    """kNN (k, T from cfg) and an L-BFGS linear probe on frozen h: train split -> test split."""
    model.eval()
    size = cfg.image_size
    kw = dict(size=size, device=device, batch_size=cfg.eval_batch_size, precision=precision, channels_last=cfg.channels_last)
    train_f = extract(model.encode, data.train.images, **kw)
    test_f = extract(model.encode, data.test.images, **kw)
    classes = len(data.train.classes or []) or int(data.train.labels.max()) + 1
    knn = knn_accuracy(train_f, data.train.labels, test_f, data.test.labels, classes, cfg.knn_k, cfg.knn_temperature)
    probe = linear_probe(train_f, data.train.labels, test_f, data.test.labels, classes, seed=cfg.seed)
    return {"knn_top1": knn, "linear_top1": probe["top1"], "linear_top5": probe["top5"]}


class Progress:
    """A tqdm bar on stderr showing loss, lr and images/s."""

    def __init__(self, total: int, initial: int):
        from tqdm import tqdm

        self.bar = tqdm(total=total, initial=initial, file=sys.stderr, dynamic_ncols=True, leave=False, desc="pretrain", disable=None)

    def update(self, n: int, **values: object) -> None:
        self.bar.update(n)
        if values:
            self.bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        self.bar.close()


def log(msg: str) -> None:
    print(f"fastclr: {msg}", file=sys.stderr, flush=True)


def pretrain(cfg: config.Config) -> dict:
    """Run SimCLR pretraining as configured; returns the result dict printed as the final JSON."""
    config.validate(cfg)
    out = Path(cfg.out)
    try:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out {out}: cannot create the run folder ({e.strerror})") from None
    device = pick_device(cfg.device)
    precision = resolve(cfg.precision, device)
    torch.manual_seed(cfg.seed)

    data = datasets.load(cfg.data, cfg.image_size)
    pretrain_set = datasets.balanced_subset(data.pretrain, cfg.max_images, cfg.seed)
    if len(pretrain_set) < cfg.batch_size:
        raise UserError(f"batch_size={cfg.batch_size} is larger than the {len(pretrain_set)} training images; lower --batch-size")
    loader = InMemoryLoader(pretrain_set.images, cfg.batch_size, cfg.seed, device)
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    run_steps = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_rule)  # derived, never written back into cfg

    model = build_model(cfg).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(model, cfg.optimizer, peak_lr, cfg.weight_decay, cfg.momentum, cfg.trust_coefficient)
    config.save(cfg, out / "config.yaml")
    aug = augment_config(cfg)

    step = 0
    ckpt_path = out / "checkpoints" / "last.pt"
    if ckpt_path.exists():
        state = checkpoint.load(ckpt_path, map_location=device)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = int(state["step"])
        log(f"resuming from {ckpt_path} at step {step}")
    log(f"{len(pretrain_set)} images, {steps_per_epoch} steps/epoch, {run_steps} steps, batch {cfg.batch_size}, peak lr {peak_lr:.4g}, {device} {precision}")

    metrics = open(out / "metrics.jsonl", "a")
    progress = Progress(run_steps, step)
    model.train()
    last_loss = float("nan")
    t_start, images_done = time.perf_counter(), 0
    t_log, images_log = t_start, 0
    while step < run_steps:
        epoch, start = divmod(step, steps_per_epoch)
        for index, images in loader.epoch(epoch, start):
            lr = lr_at(step, peak_lr, warmup_steps, total_steps)
            set_lr(optimizer, lr)
            x = make_views(images, index, epoch, cfg, aug)
            if cfg.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            value = train_step(model, optimizer, x, cfg, step, device, precision)
            step += 1
            images_done += images.shape[0]
            images_log += images.shape[0]
            if step % cfg.log_every == 0 or step == run_steps:
                last_loss = float(value)  # the only host sync of the loop
                if not math.isfinite(last_loss):
                    raise UserError(f"loss became {last_loss} at step {step}: lower the learning rate (lr={cfg.lr}), raise the temperature ({cfg.temperature}), or use --set precision=fp32")
                now = time.perf_counter()
                ips = images_log / max(now - t_log, 1e-9)
                t_log, images_log = now, 0
                metrics.write(json.dumps({"step": step, "epoch": step / steps_per_epoch, "loss": last_loss, "lr": lr, "images_per_s": ips}) + "\n")
                metrics.flush()
                progress.update(0, loss=f"{last_loss:.4f}", lr=f"{lr:.3g}", img_s=f"{ips:.0f}")
            progress.update(1)
            if step % steps_per_epoch == 0 or step == run_steps:
                save_checkpoint(ckpt_path, model, optimizer, cfg, step, steps_per_epoch)
            if step >= run_steps:
                break
    progress.close()
    metrics.close()
    elapsed = time.perf_counter() - t_start

    result: dict = {
        "out": str(out),
        "epochs": step / steps_per_epoch,
        "steps": step,
        "final_loss": last_loss,
        "images_per_s": images_done / elapsed if images_done else 0.0,
    }
    if cfg.eval and data.train is not None and data.test is not None:
        log("evaluating: kNN and linear probe, SimCLR encoder and random-init baseline")
        ours = evaluate_encoder(model, data, cfg, device, precision)
        torch.manual_seed(cfg.seed + 1)
        baseline = build_model(cfg).to(device)
        if cfg.channels_last:
            baseline = baseline.to(memory_format=torch.channels_last)
        base = evaluate_encoder(baseline, data, cfg, device, precision)
        result["eval"] = {
            **ours,
            "random_init_knn_top1": base["knn_top1"],
            "random_init_linear_top1": base["linear_top1"],
        }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def save_checkpoint(path: Path, model, optimizer, cfg: config.Config, step: int, steps_per_epoch: int) -> None:
    checkpoint.save(
        {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
            "config": config.to_dict(cfg),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": step,
            "epoch": step // steps_per_epoch,
            "step_in_epoch": step % steps_per_epoch,
        },
        path,
    )
