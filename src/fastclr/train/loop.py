"""SimCLR pretraining: the loop, the step, and the evaluation at the end.

Single process: ``fastclr pretrain``. The step: V augmented views of each image (batched, on
the device), one forward pass of the concatenated views (BN sees all of them, as in the
reference code), NT-Xent (or a variant) in float32, LARS with warm-up + cosine, per step.

Faults: a run folder resumes from its newest loadable checkpoint (``checkpoint.load_latest``),
mid-epoch included, and ends with the same weights as an uninterrupted run: the data order and
the augmentation are pure functions of (seed, epoch, index), the learning rate of the step, and
every other generator's state is in the checkpoint. Checkpoints are written every
``checkpoint_every`` steps, at each epoch's end, at the end, and on SIGTERM / SIGINT (the step in
flight finishes first). A non-finite loss stops the run before anything is written, so
``last.pt`` always holds finite weights. There is no gradient scaler to save: bf16 needs none.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
import time
from pathlib import Path

import torch

from fastclr import config
from fastclr.data import datasets
from fastclr.data.loader import build_loader
from fastclr.errors import UserError
from fastclr.eval.features import extract
from fastclr.eval.knn import knn_accuracy
from fastclr.eval.monitor import Monitors
from fastclr.eval.probe import linear_probe
from fastclr.method.lars import build_optimizer, scaled_lr, set_lr
from fastclr.method.model import SimCLR
from fastclr.method.schedule import lr_at
from fastclr.train import checkpoint, dist, preflight
from fastclr.train.precision import pick_device, resolve
from fastclr.train.step import augment_config, build_model, make_views, train_step
from fastclr.train.tracking import MetricsLog


def evaluate_encoder(
    model: SimCLR, data: datasets.DataSplits, cfg: config.Config, device, precision: str
) -> dict[str, float]:
    """kNN (k, T from cfg) and an L-BFGS linear probe on frozen h: train split -> test split."""
    model.eval()
    size = cfg.image_size
    kw = dict(
        size=size, device=device, batch_size=cfg.eval_batch_size, precision=precision, channels_last=cfg.channels_last
    )
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

        self.bar = tqdm(
            total=total,
            initial=initial,
            file=sys.stderr,
            dynamic_ncols=True,
            leave=False,
            desc="pretrain",
            disable=None if dist.is_main() else True,
        )

    def update(self, n: int, **values: object) -> None:
        self.bar.update(n)
        if values:
            self.bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        self.bar.close()


def log(msg: str) -> None:
    if dist.is_main():
        print(f"fastclr: {msg}", file=sys.stderr, flush=True)


def warn(msg: str) -> None:
    log(f"warning: {msg}")


class StopSignal:
    """SIGTERM and SIGINT set a flag; the loop finishes its step, checkpoints and returns.

    A second signal of the same kind acts at once (the handler before ours is put back).
    """

    def __init__(self) -> None:
        self.signum = 0
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))

    @contextlib.contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # handlers live in the main thread only
            yield self
            return
        for s in (signal.SIGTERM, signal.SIGINT):
            self._previous[s] = signal.signal(s, self._handle)
        try:
            yield self
        finally:
            for s, handler in self._previous.items():
                signal.signal(s, handler)

    def agreed(self, world: int, device, sync_point: bool) -> bool:
        """Stop now? One process: whenever a signal came. k processes: all stop at the same step,
        agreed at ``sync_point`` steps (one all-reduce), so no rank waits on a collective alone."""
        if world == 1:
            return bool(self.signum)
        if not sync_point:
            return False
        flag = torch.tensor(1.0 if self.signum else 0.0, device=device)
        if dist.mean(flag).item() > 0:
            self.signum = self.signum or signal.SIGTERM
            return True
        return False


# Config fields a checkpoint's weights must match, and fields whose change does not alter the run.
_SHAPE_KEYS = ("arch", "cifar_stem", "head_layers", "head_hidden", "proj_dim", "optimizer")
_FREE_KEYS = {
    "out",
    "max_steps",
    "log_every",
    "checkpoint_every",
    "keep_checkpoints",
    "eval",
    "knn_k",
    "knn_temperature",
    "eval_batch_size",
    "device",
    "workers",
    "download",
    "max_bad_fraction",
    "channels_last",
    "knn_every",
    "online_probe",
    "compile",
}


def resume_state(ckpt_dir: Path, cfg: config.Config, device, resume: bool) -> dict | None:
    """The checkpoint to continue from (None: start at step 0); with ``resume`` False, delete old ones."""
    if not resume:
        old = checkpoint.existing(ckpt_dir)
        if old:
            log(f"--no-resume: starting over at step 0; deleting {len(old)} checkpoint file(s) in {ckpt_dir}")
            if dist.is_main():
                for path in old:
                    path.unlink(missing_ok=True)
        return None
    found = checkpoint.load_latest(ckpt_dir, map_location=device, warn=warn, set_aside=dist.is_main())
    if found is None:
        return None
    state, path = found
    saved = state.get("config", {})
    for key in _SHAPE_KEYS:
        if key in saved and saved[key] != getattr(cfg, key):
            raise UserError(
                f"{key}={getattr(cfg, key)!r} differs from {saved[key]!r} in checkpoint {path}: resume with the same value, or start over with --no-resume (or another --out)"
            )
    changed = [
        f"{k} {saved[k]!r} -> {getattr(cfg, k)!r}"
        for k in config.FIELDS
        if k in saved and k not in _FREE_KEYS and saved[k] != getattr(cfg, k)
    ]
    if changed:
        warn(f"resuming with changed settings ({', '.join(changed)}): the result will differ from an uninterrupted run")
    log(f"resuming from {path} at step {state['step']}")
    return state


def nonfinite_message(bad: int, cfg: config.Config, precision: str, saved: tuple[int, Path] | None) -> str:
    where = f"the last good checkpoint is {saved[1]} (step {saved[0]})" if saved else "no checkpoint was written"
    low = (
        f"too little precision (precision={precision}; try --set precision=fp32)"
        if precision != "fp32"
        else "float32 precision exceeded (extreme inputs)"
    )
    return f"loss became nan or inf at step {bad}: likely causes: learning rate too high (lr={cfg.lr}), temperature too low (temperature={cfg.temperature}), or {low}; {where}"


def pretrain(cfg: config.Config, resume: bool = True) -> dict:
    """Run SimCLR pretraining as configured; returns the result dict printed as the final JSON.

    Continues from ``OUT/checkpoints`` when a checkpoint is there (``resume`` False deletes them and
    starts over). On SIGTERM / SIGINT it returns early with ``interrupted: True`` and the
    conventional ``exit_code`` (143 / 130) after writing a checkpoint.
    """
    config.validate(cfg)
    preflight.per_process_batch(cfg, preflight.world_size_from_env())
    device = dist.setup(pick_device(cfg.device))  # joins torchrun's process group, if any
    world = dist.world_size()
    dist.check_same(config.to_dict(cfg))
    out = Path(cfg.out)
    preflight.output_folder(out)
    precision = resolve(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: let cuDNN time its kernels once
    torch.manual_seed(cfg.seed)

    data = load_data(cfg, out if dist.is_main() else None)
    pretrain_set = datasets.balanced_subset(data.pretrain, cfg.max_images, cfg.seed)
    stored = getattr(pretrain_set, "images", None)
    side = (
        None  # texts have no pixels
        if config.is_text(cfg)
        else int(min(stored.shape[-2:]))
        if isinstance(stored, torch.Tensor)
        else int(pretrain_set.hw.min())
        if len(pretrain_set)
        else None
    )
    preflight.against_data(cfg, len(pretrain_set), side, data.name)
    loader = build_loader(
        pretrain_set,
        cfg.batch_size,
        cfg.seed,
        device,
        views=cfg.views,
        aug=augment_config(cfg),
        workers=cfg.workers,
        rank=dist.rank(),
        world_size=world,
    )
    steps_per_epoch = len(loader)
    total_steps = cfg.epochs * steps_per_epoch
    run_steps = min(total_steps, cfg.max_steps) if cfg.max_steps else total_steps
    warmup_steps = round(cfg.warmup_epochs * steps_per_epoch)
    peak_lr = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_rule)  # derived, never written back into cfg

    model = build_model(cfg)
    if cfg.init:  # before global BN and DDP, so every rank starts from the file's weights
        from fastclr.train.weights import init_encoder

        init_encoder(model.encoder, cfg.init)  # a resumed run then overwrites these with its checkpoint
    if world > 1 and cfg.sync_bn:
        model = dist.sync_batchnorm(model, device)  # global BN: statistics over all k*V*b views
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    preflight.free_disk(out, preflight.checkpoint_bytes(model, cfg.optimizer))
    net = dist.wrap(model, device)  # DDP when k > 1; checkpoints and evaluation use the bare model
    if cfg.compile:
        net = torch.compile(net)  # the step runs compiled; checkpoints keep the bare model's keys
    optimizer = build_optimizer(model, cfg.optimizer, peak_lr, cfg.weight_decay, cfg.momentum, cfg.trust_coefficient)
    if dist.is_main():
        config.save(cfg, out / "config.yaml")
    aug = augment_config(cfg)

    ckpt_dir = out / "checkpoints"
    if dist.is_main():
        checkpoint.remove_temporaries(ckpt_dir)
    state = resume_state(ckpt_dir, cfg, device, resume)
    monitors = Monitors(cfg, model.feature_dim, data, getattr(pretrain_set, "labels", None), device, precision, warn)
    if state is not None:
        monitors.load_state_dict(state.get("monitor", {}))
    step = 0
    saved: tuple[int, Path] | None = None  # (step, path) of the newest checkpoint of this run
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as e:
            raise UserError(
                f"checkpoint {ckpt_dir / checkpoint.LAST} does not fit this model ({str(e).splitlines()[0][:120]}); start over with --no-resume"
            ) from None
        if "rng" in state:
            checkpoint.set_rng_state(state["rng"])
        step = int(state["step"])
        saved = (step, ckpt_dir / checkpoint.LAST)
    else:  # a checkpoint exists from the first moment on, so a kill never leaves the run without one
        saved = (0, save_checkpoint(ckpt_dir, model, optimizer, cfg, 0, steps_per_epoch, monitors.state_dict()))
    dist.check_same(
        {"step": step}, "checkpoint", f"every node must see the same --out ({out}): use a shared file system"
    )
    log(
        f"{len(pretrain_set)} images, {steps_per_epoch} steps/epoch, {run_steps} steps, batch {cfg.batch_size}, peak lr {peak_lr:.4g}, {device} {precision}"
    )

    metrics = MetricsLog(out, start_step=step, enabled=dist.is_main())
    progress = Progress(run_steps, step)
    stop = StopSignal()
    model.train()
    last_loss: float | None = None  # None until a step of this process logs one
    bad_step = torch.full(
        (), -1, dtype=torch.int64, device=device
    )  # first step with a non-finite loss, kept on the device
    t_start, images_done = time.perf_counter(), 0
    t_log, images_log = t_start, 0
    stopping = False
    with stop.installed():
        while step < run_steps and not stopping:
            epoch, start = divmod(step, steps_per_epoch)
            for index, images in loader.epoch(epoch, start):
                lr = lr_at(step, peak_lr, warmup_steps, total_steps)
                set_lr(optimizer, lr)
                x = make_views(images, index, epoch, cfg, aug)
                if cfg.channels_last and x.dim() == 4:  # images; text views are token ids
                    x = x.contiguous(memory_format=torch.channels_last)
                value = train_step(net, optimizer, x, cfg, step, device, precision, monitors.hook(index))
                step += 1
                bad_step = torch.where((bad_step < 0) & ~torch.isfinite(value), step, bad_step)
                images_done += index.shape[0] * world  # global images
                images_log += index.shape[0] * world
                log_now = step % cfg.log_every == 0 or step == run_steps
                if log_now:
                    last_loss = float(value)  # the only host sync of the loop
                    if int(bad_step) >= 0:
                        raise UserError(nonfinite_message(int(bad_step), cfg, precision, saved))
                    now = time.perf_counter()
                    ips = images_log / max(now - t_log, 1e-9)
                    t_log, images_log = now, 0
                    metrics.log(
                        {
                            "step": step,
                            "epoch": step / steps_per_epoch,
                            "loss": last_loss,
                            "lr": lr,
                            "images_per_s": ips,
                        }
                    )
                    metrics.flush()
                    progress.update(0, loss=f"{last_loss:.4f}", lr=f"{lr:.3g}", img_s=f"{ips:.0f}")
                progress.update(1)
                if step % steps_per_epoch == 0 and (cfg.knn_every or cfg.online_probe):
                    record = monitors.epoch_end(model, step // steps_per_epoch)
                    if record:
                        metrics.log({"step": step, "epoch": step / steps_per_epoch, **record})
                stopping = stop.agreed(world, device, sync_point=log_now)
                if stopping or step % cfg.checkpoint_every == 0 or step % steps_per_epoch == 0 or step == run_steps:
                    if int(bad_step) >= 0 or not all_finite(model):  # never overwrite good weights with bad ones
                        raise UserError(nonfinite_message(max(int(bad_step), step), cfg, precision, saved))
                    saved = (
                        step,
                        save_checkpoint(ckpt_dir, model, optimizer, cfg, step, steps_per_epoch, monitors.state_dict()),
                    )
                if step >= run_steps or stopping:
                    break
    progress.close()
    metrics.close()
    elapsed = time.perf_counter() - t_start
    if last_loss is None and dist.is_main():  # resumed with nothing (or nothing logged) left to run
        last_loss = last_logged_loss(out / "metrics.jsonl")
    if stopping:
        name = signal.Signals(stop.signum).name
        log(f"{name}: stopped after step {step} of {run_steps}; checkpoint {saved[1]}")
        log(f"resume with: fastclr pretrain --out {out}")
        dist.cleanup()
        return {
            "out": str(out),
            "steps": step,
            "final_loss": last_loss,
            "interrupted": True,
            "signal": name,
            "exit_code": 128 + stop.signum,
            "checkpoint": str(saved[1]),
        }
    dist.cleanup()  # training is over; rank 0 evaluates and writes the result alone

    result: dict = {
        "out": str(out),
        "epochs": step / steps_per_epoch,
        "steps": step,
        "final_loss": last_loss,
        "images_per_s": images_done / elapsed if images_done else 0.0,
        "skipped": len(data.skipped),  # files that could not be decoded: OUT/skipped.txt
    }
    if cfg.eval and dist.is_main() and config.is_text(cfg):
        from fastclr.text.sts import evaluate_text

        log("evaluating: STS and/or kNN and linear probe, trained encoder and its starting weights")
        torch.manual_seed(cfg.seed)  # the starting weights: the file's, or the same random draw
        result["eval"] = evaluate_text(model, build_model(cfg).to(device), data, cfg, device, precision)
    elif cfg.eval and dist.is_main() and data.train is not None and data.test is not None:
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
    if dist.is_main():
        (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def load_data(cfg: config.Config, out_dir: Path | None):
    """The run's data: images (:func:`fastclr.data.datasets.load`) or tokenised texts (:mod:`fastclr.text.data`)."""
    if config.is_text(cfg):
        from fastclr.text import data as text_data
        from fastclr.text.encoder import load_tokenizer

        return text_data.load(
            cfg.data,
            load_tokenizer(cfg.arch),
            cfg.max_length,
            column=cfg.text_column,
            max_bad_fraction=cfg.max_bad_fraction,
            out_dir=out_dir,
        )
    return datasets.load(
        cfg.data,
        cfg.image_size,
        out_dir=out_dir,
        download=cfg.download,
        max_bad_fraction=cfg.max_bad_fraction,
        workers=cfg.workers,
    )


def last_logged_loss(path: Path) -> float | None:
    """The newest ``loss`` in a metrics.jsonl (None when there is none): the result of a resumed run."""
    if not path.is_file():
        return None
    for line in reversed(path.read_text().splitlines()):
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("loss"), (int, float)):
            return float(record["loss"])
    return None


def all_finite(model: torch.nn.Module) -> bool:
    """Every weight and buffer is finite (one host sync)."""
    tensors = [t.detach().isfinite().all() for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]
    return bool(torch.stack(tensors).all()) if tensors else True


def save_checkpoint(
    folder: Path, model, optimizer, cfg: config.Config, step: int, steps_per_epoch: int, monitor: dict | None = None
) -> Path:
    """Write step ``step`` into the rotating set of ``folder``; returns ``folder/last.pt``."""
    last = folder / checkpoint.LAST
    if not dist.is_main():  # every rank holds the same weights; rank 0 writes them
        return last
    state = {
        "format": checkpoint.FORMAT,
        "version": checkpoint.VERSION,
        "config": config.to_dict(cfg),
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "step": step,
        "epoch": step // steps_per_epoch,
        "step_in_epoch": step % steps_per_epoch,
        "rng": checkpoint.rng_state(),
        "monitor": monitor or {},  # the online probe's classifier and optimiser (monitor.py)
    }
    checkpoint.save_rotating(state, folder, step, cfg.keep_checkpoints)
    return last
