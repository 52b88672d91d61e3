"""SimCLR pretraining, read top to bottom: setup, resume, the loop, finish.

Single process: ``fastclr pretrain``; :func:`fastclr.pipeline.pretrain_and_evaluate` adds the
monitors and the evaluation at the end (training never imports evaluation: they plug in through
:mod:`fastclr.train.callbacks`). The step (:mod:`fastclr.train.step`): V augmented views of each
image (batched, on the device), one forward pass of the concatenated views (BN sees all of them,
as in the reference code), NT-Xent (or a variant) in float32, LARS with warm-up + cosine, per step
(SimCLR section 3, Appendix B.1).

Faults: a run folder resumes from its newest loadable checkpoint (:mod:`fastclr.train.checkpoint`),
mid-epoch included, and ends with the same weights as an uninterrupted run: the data order and
the augmentation are pure functions of (seed, epoch, index), the learning rate of the step, and
every other generator's state is in the checkpoint. Checkpoints are written every
``checkpoint_every`` steps, at an epoch's end when ``checkpoint_minutes`` passed since the last one,
at the end, and on SIGTERM / SIGINT (the step in flight finishes first: :mod:`fastclr.train.signals`).
A non-finite loss stops the run before anything is written, so ``last.pt`` always holds finite weights.
bf16 needs no gradient scaler.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fastclr import config, log
from fastclr.data import datasets
from fastclr.data.loaders import tiers
from fastclr.data.loaders.base import Batch, Loader, ViewRecipe
from fastclr.data.loaders.tiers import build_loader
from fastclr.data.sets import DataSplits, FileSet, ImageSet
from fastclr.data.subsets import balanced_subset
from fastclr.data.text import TextSet, TextSplits
from fastclr.errors import UserError
from fastclr.method.lars import build_optimizer, scaled_lr, set_lr
from fastclr.method.model import SimCLR
from fastclr.method.schedule import lr_at
from fastclr.train import budget, checkpoint, dist, preflight
from fastclr.train.callbacks import Callback, LoopState, batch_hook, merged_state
from fastclr.train.precision import pick_device, resolve
from fastclr.train.restore import build_model
from fastclr.train.signals import StopSignal
from fastclr.train.step import Objective, objective, train_step, view_recipe
from fastclr.train.tracking import MetricsLog

# --- setup --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """Step counts and the peak learning rate, derived from the config (never written back into it)."""

    steps_per_epoch: int
    total_steps: int  # the schedule spans every epoch ...
    run_steps: int  # ... even when max_steps stops the run earlier
    warmup_steps: int
    peak_lr: float

    @classmethod
    def of(cls, cfg: config.Config, steps_per_epoch: int) -> Schedule:
        total = cfg.epochs * steps_per_epoch
        return cls(
            steps_per_epoch=steps_per_epoch,
            total_steps=total,
            run_steps=min(total, cfg.max_steps) if cfg.max_steps else total,
            warmup_steps=round(cfg.warmup_epochs * steps_per_epoch),
            peak_lr=scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_rule),  # Appendix B.1: lr * B / 256
        )


Pretraining = ImageSet | FileSet | TextSet  # what a run pretrains on (a ShardSet is a FileSet)


@dataclass
class Run:
    """Everything :func:`setup` builds: what training, the monitors and the evaluation share."""

    cfg: config.Config
    out: Path
    device: torch.device
    world: int
    precision: str
    data: DataSplits | TextSplits
    images: Pretraining  # the pretraining set (a FileSet is streamed from disk, a ShardSet too)
    loader: Loader
    model: SimCLR  # the bare network: checkpoints and evaluation use it
    net: nn.Module  # what the step runs: DDP and/or compiled around ``model``
    optimizer: torch.optim.Optimizer
    recipe: ViewRecipe  # how each batch draws its views
    schedule: Schedule
    objective: Objective  # the loss and the views' layout the step optimises, built once

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoints"


def setup(cfg: config.Config) -> Run:
    """Check the config, join the process group, load the data, build the model and optimiser."""
    preflight.settings(cfg)
    preflight.per_process_batch(cfg, preflight.world_size_from_env())
    device = dist.setup(pick_device(cfg.device))  # joins torchrun's process group, if any
    dist.check_same(config.to_dict(cfg))
    out = Path(cfg.out)
    preflight.output_folder(out)
    precision = resolve(cfg.precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # every step has the same shapes: let cuDNN time its kernels once
    torch.manual_seed(cfg.seed)
    data, images = load_images(cfg, out, tiers.budget(cfg.data_memory_gb, device))
    recipe = view_recipe(cfg)
    loader = build_loader(
        images,
        cfg.batch_size,
        cfg.seed,
        device,
        views=cfg.views,
        aug=recipe.aug,
        workers=cfg.workers,
        rank=dist.rank(),
        world_size=dist.world_size(),
        resume=f"fastclr pretrain --out {out}",
        decode=cfg.decode,
    )
    schedule = Schedule.of(cfg, len(loader))
    model, net = build_network(cfg, device, out)
    optimizer = build_optimizer(
        model, cfg.optimizer, schedule.peak_lr, cfg.weight_decay, cfg.momentum, cfg.trust_coefficient
    )
    if dist.is_main():
        config.save(cfg, out / "config.yaml")
    return Run(
        cfg, out, device, dist.world_size(), precision, data, images, loader, model, net, optimizer, recipe, schedule,
        objective(cfg),
    )  # fmt: skip


def load_images(cfg: config.Config, out: Path, limit: int) -> tuple[DataSplits | TextSplits, Pretraining]:
    """The run's data (images in their tier, ``data/loaders/tiers.py``, ``limit`` bytes of decoded images at
    most; or tokenised texts) and its pretraining set (``max_images``: a class-balanced subset), checked."""
    out_dir = out if dist.is_main() else None
    data: DataSplits | TextSplits
    if config.is_text(cfg):  # tokenised texts: the same fields, token tensors instead of pixels
        data = load_texts(cfg, out_dir)
    else:
        data = datasets.load(
            cfg.data, cfg.image_size, out_dir=out_dir, download=cfg.download, max_bad_fraction=cfg.max_bad_fraction,
            workers=cfg.workers, memory_limit=limit,
        )  # fmt: skip
    images = balanced_subset(data.pretrain, cfg.max_images, cfg.seed)
    side: int | None
    if isinstance(images, TextSet):
        side = None  # no pixels to check the crop against
    elif isinstance(images, ImageSet):
        side = int(min(images.images.shape[-2:]))
    else:
        side = images.side or None  # the median short side of a sample of the files
    preflight.against_data(cfg, len(images), side, data.name)
    return data, images


def load_texts(cfg: config.Config, out_dir: Path | None) -> TextSplits:
    """A text run's data, tokenised by its encoder's tokenizer."""
    from fastclr.data import text as text_data
    from fastclr.method.text_encoder import RANDOM_INIT_NOTE, load_tokenizer

    tokenizer = load_tokenizer(cfg.arch)
    if cfg.hf_random_init:
        log.warn(RANDOM_INIT_NOTE)
    return text_data.load(
        cfg.data, tokenizer, cfg.max_length, column=cfg.text_column, max_bad_fraction=cfg.max_bad_fraction,
        out_dir=out_dir,
    )  # fmt: skip


def build_network(cfg: config.Config, device: torch.device, out: Path) -> tuple[SimCLR, nn.Module]:
    """The bare SimCLR network on its device, and the module the step runs (DDP, compiled)."""
    model = build_model(cfg)
    if not config.is_text(cfg):
        preflight.input_size(model.encoder, cfg.image_size, cfg.arch)  # before any data is read or step run
    if cfg.init:  # before global BN and DDP, so every rank starts from the file's weights
        from fastclr.train.weights import init_encoder

        init_encoder(model.encoder, cfg.init)  # a resumed run then overwrites these with its checkpoint
    if dist.world_size() > 1 and cfg.sync_bn:
        model = dist.sync_batchnorm(model, device)  # type: ignore[assignment]  # global BN: statistics over all k*V*b views
    model = model.to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    preflight.free_disk(out, preflight.checkpoint_bytes(model, cfg.optimizer))
    net = dist.wrap(model, device)  # DDP when k > 1; checkpoints and evaluation use the bare model
    if cfg.compile:
        net = torch.compile(net)  # type: ignore[assignment]  # the step runs compiled; checkpoints keep the bare model's keys
    return model, net


# --- resume -------------------------------------------------------------------------------------


def resume_or_start(run: Run, resume: bool, callbacks: Sequence[Callback]) -> tuple[int, Path]:
    """Continue from the newest checkpoint (``resume``), else write step 0's; returns (step, checkpoint)."""
    folder, main = run.ckpt_dir, dist.is_main()
    if main:
        checkpoint.remove_temporaries(folder)
    if not resume:
        checkpoint.clear(folder, main)
    found = checkpoint.load_latest(folder, map_location="cpu", warn=log.warn, set_aside=main) if resume else None
    if found is not None and run.cfg.budget_minutes:
        adopt_saved_epochs(run, found[0].get("config", {}))  # a budgeted run that started already chose its epochs
    state = checkpoint.resume_state(folder, run.cfg, main, found) if resume else None
    if state is None and run.cfg.budget_minutes:
        fit_budget(run)
    if state is not None:
        for cb in callbacks:
            cb.load_state_dict(state.get("monitor", {}))
        step = checkpoint.restore_training(state, run.model, run.optimizer, folder)
        saved = folder / checkpoint.LAST
    else:  # a checkpoint exists from the first moment on, so a kill never leaves the run without one
        step, saved = 0, save(run, 0, callbacks)
    dist.check_same(
        {"step": step}, "checkpoint", f"every node must see the same --out ({run.out}): use a shared file system"
    )
    s, cfg = run.schedule, run.cfg
    log.info(
        f"{len(run.images)} images, {s.steps_per_epoch} steps/epoch, {s.run_steps} steps, batch {cfg.batch_size}, "
        f"peak lr {s.peak_lr:.4g}, {run.device} {run.precision}"
    )
    return step, saved


def adopt_saved_epochs(run: Run, saved: dict[str, Any]) -> None:
    """Take ``epochs`` from the newest checkpoint's config ``saved``, when it has them (the budget is then spent)."""
    if "epochs" in saved:
        run.cfg.epochs, run.cfg.budget_minutes = int(saved["epochs"]), float(saved.get("budget_minutes", 0.0))
        run.schedule = Schedule.of(run.cfg, run.schedule.steps_per_epoch)
        if dist.is_main():
            config.save(run.cfg, run.out / "config.yaml")


def fit_budget(run: Run) -> None:
    """Time a few steps (``train/budget.py``), set ``epochs`` to what fits in ``budget_minutes`` (at most the
    configured ``epochs``: the budget shortens a schedule, never lengthens it past that), save the config."""
    cfg = run.cfg
    batch = next(iter(run.loader.epoch(0, 0)))

    def step() -> torch.Tensor:
        return one_step(run, 0, 0, run.schedule.peak_lr * 1e-3, batch, ())

    step_s = dist.largest(budget.seconds_per_step(step, run.model, run.optimizer, run.device), run.device)
    bound = min(cfg.epochs, budget.MAX_EPOCHS)
    epochs = budget.epochs_for(cfg.budget_minutes * 60, step_s, run.schedule.steps_per_epoch, bound)
    log.info(
        f"budget {cfg.budget_minutes:g} min: {step_s:.3g} s a step x {run.schedule.steps_per_epoch} steps/epoch "
        f"-> {epochs} epochs (set epochs=N to choose them yourself)"
    )
    cfg.epochs, cfg.budget_minutes = epochs, 0.0
    run.schedule = Schedule.of(cfg, run.schedule.steps_per_epoch)
    if dist.is_main():
        config.save(cfg, run.out / "config.yaml")


def save(run: Run, step: int, callbacks: Sequence[Callback]) -> Path:
    """Write the run's checkpoint after ``step`` steps; returns ``checkpoints/last.pt``."""
    state = {}
    if dist.is_main():
        state = checkpoint.assemble(
            run.model, run.optimizer, run.cfg, step, run.schedule.steps_per_epoch, merged_state(callbacks)
        )
    return checkpoint.write(run.ckpt_dir, state, run.cfg.keep_checkpoints, main=dist.is_main())


# --- the loop -----------------------------------------------------------------------------------


@dataclass
class Tally:
    """The running loop's counters."""

    step: int
    saved: tuple[int, Path]  # (step, path) of the newest checkpoint of this run
    bad_step: torch.Tensor  # first step with a non-finite loss (-1: none), kept on the device
    last_loss: float | None = None  # None until a step of this process logs one
    stopping: bool = False
    images_done: int = 0
    t_start: float = field(default_factory=time.perf_counter)
    t_log: float = field(default_factory=time.perf_counter)
    images_log: int = 0
    t_aside: float = 0.0  # seconds of checkpoints and epoch-end callbacks (monitors): not training
    t_saved: float = field(default_factory=time.monotonic)  # when this process last wrote (or found) a checkpoint

    @contextlib.contextmanager
    def aside(self, device: torch.device):
        """Time the block as work other than training; the device's queued steps finish first."""
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # once per epoch or checkpoint: the saves read the weights anyway
        t = time.perf_counter()
        try:
            yield
        finally:
            self.t_aside += time.perf_counter() - t


def loop(run: Run, step: int, saved: Path, callbacks: Sequence[Callback]) -> tuple[Tally, StopSignal]:
    """Train from ``step`` to ``run_steps`` (or until a signal or a callback stops it)."""
    cfg, s = run.cfg, run.schedule
    tally = Tally(step, (step, saved), torch.full((), -1, dtype=torch.int64, device=run.device))
    metrics = MetricsLog(run.out, start_step=step, enabled=dist.is_main())

    def write_record(record: dict[str, Any]) -> None:
        metrics.log(record)
        for cb in callbacks:
            cb.on_log(record)

    progress = Progress(s.run_steps, step)
    stop = StopSignal()
    run.model.train()
    with stop.installed():
        while tally.step < s.run_steps and not tally.stopping:
            epoch, first = divmod(tally.step, s.steps_per_epoch)
            for batch in run.loader.epoch(epoch, first):
                lr = lr_at(tally.step, s.peak_lr, s.warmup_steps, s.total_steps)
                value = one_step(run, tally.step, epoch, lr, batch, callbacks)
                tally.step += 1
                tally.bad_step = torch.where((tally.bad_step < 0) & ~torch.isfinite(value), tally.step, tally.bad_step)
                tally.images_done += len(batch) * run.world  # global images
                tally.images_log += len(batch) * run.world
                log_now = tally.step % cfg.log_every == 0 or tally.step == s.run_steps
                if log_now:
                    log_step(run, tally, value, lr, write_record, progress)
                    metrics.flush()
                progress.update(1)
                state = LoopState(
                    run.model, tally.step, tally.step / s.steps_per_epoch, s.steps_per_epoch, write_record
                )
                epoch_end = tally.step % s.steps_per_epoch == 0
                with tally.aside(run.device) if epoch_end else contextlib.nullcontext():
                    end_of_step(state, callbacks, stop)
                tally.stopping = stop.agreed(run.world, run.device, sync_point=log_now)
                if tally.stopping or checkpoint_due(tally, cfg, s, run.device):
                    with tally.aside(run.device):
                        broken = int(tally.bad_step) >= 0 or not all_finite(run.model)
                        if dist.largest(float(broken), run.device) > 0:  # every rank stops, none waits in a collective
                            bad = max(int(tally.bad_step), tally.step)  # never overwrite good weights
                            raise UserError(nonfinite_message(bad, cfg, run.precision, tally.saved))
                        tally.saved = (tally.step, save(run, tally.step, callbacks))
                        tally.t_saved = time.monotonic()
                if tally.step >= s.run_steps or tally.stopping:
                    break
    progress.close()
    metrics.close()
    return tally, stop


def one_step(
    run: Run,
    step: int,
    epoch: int,
    lr: float,
    batch: Batch,
    callbacks: Sequence[Callback],
) -> torch.Tensor:
    """Views of one batch (the batch draws them), one optimisation step at learning rate ``lr``; the loss
    as a device tensor."""
    set_lr(run.optimizer, lr)
    x = batch.views(run.recipe, epoch)
    small = batch.small_views(run.recipe, epoch)  # multi-crop's small views, or None
    on_h = batch_hook(callbacks, batch.index)
    return train_step(run.net, run.optimizer, x, run.objective, step, run.device, run.precision, on_h, small)


def log_step(run: Run, tally: Tally, value: torch.Tensor, lr: float, write: Any, progress: Progress) -> None:
    """Read the loss (a host sync, every ``log_every`` steps), stop on a non-finite one, write the metrics line."""
    tally.last_loss = float(value)
    bad = int(dist.largest(float(tally.bad_step), run.device))  # any rank's: every rank stops, none waits
    if bad >= 0:
        raise UserError(nonfinite_message(bad, run.cfg, run.precision, tally.saved))
    now = time.perf_counter()
    ips = tally.images_log / max(now - tally.t_log, 1e-9)
    tally.t_log, tally.images_log = now, 0
    step = tally.step
    record = {"step": step, "epoch": step / run.schedule.steps_per_epoch, "loss": tally.last_loss, "lr": lr}
    write({**record, "images_per_s": ips})
    progress.update(0, loss=f"{tally.last_loss:.4f}", lr=f"{lr:.3g}", img_s=f"{ips:.0f}")


def end_of_step(state: LoopState, callbacks: Sequence[Callback], stop: StopSignal) -> None:
    """The callbacks' turn after a step: step end, epoch end, and whether one asks to stop."""
    for cb in callbacks:
        cb.on_step_end(state)
    if state.step % state.steps_per_epoch == 0:
        for cb in callbacks:
            cb.on_epoch_end(state)
    for cb in callbacks:
        if cb.should_stop():
            stop.request(cb.stop_reason())
            break


def checkpoint_due(tally: Tally, cfg: config.Config, s: Schedule, device: torch.device) -> bool:
    """Every ``checkpoint_every`` steps, at the run's last step, and at an epoch's end when
    ``checkpoint_minutes`` passed since the last checkpoint (rank 0's clock: every rank agrees)."""
    step = tally.step
    if step % cfg.checkpoint_every == 0 or step == s.run_steps:
        return True
    if step % s.steps_per_epoch:
        return False
    waited = time.monotonic() - tally.t_saved >= 60 * cfg.checkpoint_minutes
    if dist.world_size() == 1:
        return waited
    return dist.largest(float(waited and dist.is_main()), device) > 0


# --- finish -------------------------------------------------------------------------------------


def finish(run: Run, tally: Tally, stop: StopSignal) -> dict[str, Any]:
    """The training result (the keys of the final JSON line but ``eval``); leaves the process group."""
    elapsed = time.perf_counter() - tally.t_start
    last_loss = tally.last_loss
    if last_loss is None and dist.is_main():  # resumed with nothing (or nothing logged) left to run
        last_loss = last_logged_loss(run.out / "metrics.jsonl")
    dist.cleanup()  # training is over; rank 0 evaluates and writes the result alone
    if tally.stopping:
        result: dict[str, Any] = {"out": str(run.out), "steps": tally.step, "final_loss": last_loss}
        result["interrupted"] = True
        if stop.signum:
            name = signal.Signals(stop.signum).name
            result.update(signal=name, exit_code=128 + stop.signum)
        else:
            name = stop.reason
            result["stopped_by"] = "callback"
        log.info(f"{name}: stopped after step {tally.step} of {run.schedule.run_steps}; checkpoint {tally.saved[1]}")
        if stop.signum:
            log.info(f"resume with: fastclr pretrain --out {run.out}")
        result["checkpoint"] = str(tally.saved[1])
        return result
    return {
        "out": str(run.out),
        "epochs": tally.step / run.schedule.steps_per_epoch,
        "steps": tally.step,
        "final_loss": last_loss,
        "images_per_s": tally.images_done / elapsed if tally.images_done else 0.0,  # end to end
        # the steps alone: without checkpoints and epoch-end monitors (benchmarks/gpu_check.sh reports both)
        "train_images_per_s": tally.images_done / max(elapsed - tally.t_aside, 1e-9) if tally.images_done else 0.0,
        "skipped": len(run.data.skipped),  # files that could not be decoded: OUT/skipped.txt
    }


def train(run: Run, resume: bool = True, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Resume (or start), train, finish: the training result of :func:`finish`."""
    step, saved = resume_or_start(run, resume, callbacks)
    tally, stop = loop(run, step, saved, callbacks)
    return finish(run, tally, stop)


def pretrain(cfg: config.Config, resume: bool = True, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Set up and train as configured, without evaluation (:mod:`fastclr.pipeline` adds it).

    Continues from ``OUT/checkpoints`` when a checkpoint is there (``resume`` False deletes them and
    starts over). On SIGTERM / SIGINT it returns early with ``interrupted: True`` and the
    conventional ``exit_code`` (143 / 130) after writing a checkpoint.
    """
    return train(setup(cfg), resume, callbacks)


# --- helpers ------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on stderr showing loss, lr and images/s (rank 0 only)."""

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


def nonfinite_message(bad: int, cfg: config.Config, precision: str, saved: tuple[int, Path] | None) -> str:
    """The one-line error for a loss that became nan or inf at step ``bad``."""
    where = f"the last good checkpoint is {saved[1]} (step {saved[0]})" if saved else "no checkpoint was written"
    low = (
        f"too little precision (precision={precision}; try --set precision=fp32)"
        if precision != "fp32"
        else "float32 precision exceeded (extreme inputs)"
    )
    return (
        f"loss became nan or inf at step {bad}: likely causes: learning rate too high (lr={cfg.lr}), "
        f"temperature too low (temperature={cfg.temperature}), or {low}; {where}"
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
