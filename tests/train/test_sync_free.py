"""The training step never synchronises with the host (benchmarks/README.md, "host synchronisation").

A host synchronisation stalls the CPU until the GPU has drained its queue, so the CPU can never run
ahead. Nothing in the step may read a device value into Python, size an output by its data or build a
tensor from Python data (tests/synckit.py); a dispatch mode sees every operator the step runs, forward
and backward, and fails on those.
On a CPU the colour ops may gather the samples that drew them (a ``nonzero``, free there), so the CPU
run takes the accelerator's choice (``augment.gathers`` False); where CUDA exists the step also runs
on the GPU under ``torch.cuda.set_sync_debug_mode("error")``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from fastclr import config
from fastclr.data.loaders.base import Batch, CroppedViews, RawImages
from fastclr.data.loaders.files import crop_views
from fastclr.method import augment
from fastclr.method.lars import build_optimizer, set_lr
from fastclr.train.restore import build_model
from fastclr.train.step import augment_config, objective, train_step, view_recipe
from synckit import HostSyncError, NoHostSync

B, SIDE = 8, 8


def small_config(**sets) -> config.Config:
    fields = {"arch": "resnet_micro", "image_size": SIDE, "batch_size": B, "precision": "fp32", "views": 2, **sets}
    return config.build_config(None, {}, [f"{k}={v}" for k, v in fields.items()])


def batch(streamed: bool, cfg: config.Config, device: torch.device) -> Batch:
    """RawImages uint8 [b, 3, H, W] as in memory, or CroppedViews [V, b, 3, S, S] cut as the CPU workers do."""
    g = torch.Generator().manual_seed(0)
    index = torch.randperm(64, generator=g)[:B]
    images = torch.randint(0, 256, (B, 3, 12, 12), dtype=torch.uint8, generator=g)
    if streamed:
        from PIL import Image

        pil = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
        crops = crop_views(pil, index, seed=cfg.seed, epoch=0, views=cfg.views, cfg=augment_config(cfg))
        return CroppedViews(index.to(device), crops.to(device))
    return RawImages(index.to(device), images.to(device))


def one_step(cfg: config.Config, device: torch.device, streamed: bool, guard=contextlib.nullcontext) -> NoHostSync:
    """A warm-up step (constants reach the device once), then a step under ``NoHostSync`` and ``guard()``."""
    torch.manual_seed(0)
    model = build_model(cfg).to(device).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, cfg.optimizer, 0.1, cfg.weight_decay, cfg.momentum, cfg.trust_coefficient)
    rows, recipe = batch(streamed, cfg, device), view_recipe(cfg)
    bad_step = torch.full((), -1, dtype=torch.int64, device=device)

    def step(i: int) -> torch.Tensor:  # what the loop does per step (train/loop.py one_step and its bookkeeping)
        set_lr(optimizer, 0.1 / (i + 1))
        x = rows.views(recipe, 0).contiguous(memory_format=torch.channels_last)
        value = train_step(model, optimizer, x, objective(cfg), i, device, cfg.precision)
        return torch.where((bad_step < 0) & ~torch.isfinite(value), i + 1, bad_step)

    step(0)
    mode = NoHostSync()
    with guard(), mode:
        step(1)
    return mode


CASES = [
    pytest.param(streamed, sets, id=f"{'stream' if streamed else 'memory'}-{name}")
    for streamed in (False, True)
    for name, sets in {
        "plain": {},
        "max_negatives": {"max_negatives": 5},
        "chunked": {"chunk_size": 4},
        "chunked_max_negatives": {"chunk_size": 4, "max_negatives": 5},
        "margin_triplet": {"loss": "margin_triplet"},
        "nt_logistic": {"loss": "nt_logistic"},
    }.items()
]


@pytest.mark.parametrize("streamed,sets", CASES)
def test_step_has_no_host_sync_on_cpu(streamed, sets, monkeypatch):
    monkeypatch.setattr(augment, "gathers", lambda device: False)  # the accelerator's choice
    mode = one_step(small_config(**sets), torch.device("cpu"), streamed)
    assert mode.ops > 100  # the step ran under the mode: forward, loss, backward and update


@pytest.mark.parametrize(
    "culprit",
    [
        lambda x: int(x.sum()),  # the old max_negatives count
        lambda x: torch.tensor([1.0, 2.0]),  # the old constants
        lambda x: x[x > 0],  # boolean-mask indexing
        lambda x: x.nonzero(),  # the CPU's gathered colour ops
    ],
)
def test_the_mode_catches_each_kind_of_sync(culprit):
    with pytest.raises(HostSyncError), NoHostSync():
        culprit(torch.ones(4))


@contextlib.contextmanager
def cuda_sync_errors():
    """Every synchronising CUDA call raises (torch.cuda.set_sync_debug_mode), for the block only."""
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.cuda
@pytest.mark.parametrize("streamed,sets", CASES)
def test_step_has_no_host_sync_on_cuda(streamed, sets):
    mode = one_step(small_config(**sets), torch.device("cuda"), streamed, cuda_sync_errors)
    assert mode.ops > 100
