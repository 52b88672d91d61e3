"""Multi-crop (Caron et al. 2020, SwAV section 3.2): small low-resolution views beside the full-size ones.

Properties: the small views are keyed per sample (any batch split gives the same views), have the
configured count and side, their crop areas are uniform in [min, max]; the loss over full + small
views is multi-positive NT-Xent (a plain loop reference); the step runs without host syncs; the
gradient cache and two processes give the single-process step.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from _spawn import run_ranks
from fastclr import config
from fastclr.data.loaders.base import CroppedViews, FinishedViews, RawImages
from fastclr.errors import UserError
from fastclr.method import augment as A
from fastclr.method.model import SimCLR
from fastclr.train import dist
from fastclr.train.step import (
    augment_config,
    contrastive_loss,
    forward_backward,
    objective,
    small_augment_config,
    view_count,
    view_recipe,
)
from synckit import NoHostSync

B, SIDE = 8, 16


def cfg_with(**sets) -> config.Config:
    fields = {"image_size": SIDE, "batch_size": B, "precision": "fp32", "small_crops": 2, **sets}
    cfg = dataclasses.replace(config.Config(), **fields)
    config.validate(cfg)
    return cfg


def images(n: int = B, side: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


# --- the views ----------------------------------------------------------------------------------


def test_small_views_count_and_size():
    cfg = cfg_with(small_crops=3, image_size=32)
    x = images()
    full = RawImages(torch.arange(B), x).views(view_recipe(cfg), 0)
    small = RawImages(torch.arange(B), x).small_views(view_recipe(cfg), 0)
    assert full.shape == (2 * B, 3, 32, 32)
    assert small is not None and small.shape == (3 * B, 3, 14, 14)  # 3/7 of 32, SwAV's 96 of 224
    assert RawImages(torch.arange(B), x).small_views(view_recipe(cfg_with(small_crops=0)), 0) is None
    assert view_count(cfg) == 5


@pytest.mark.parametrize("image_size,setting,want", [(224, 0, 96), (32, 0, 14), (16, 0, 8), (8, 0, 8), (32, 10, 10)])
def test_small_view_size(image_size, setting, want):
    assert A.small_view_size(image_size, setting) == want


def test_small_views_are_keyed_per_sample():
    """Any split of the batch (what another batch size, worker or process count gives) yields the same views."""
    cfg = cfg_with(small_crops=2)
    aug = augment_config(cfg)
    x, index = images(), torch.tensor([5, 17, 3, 40, 2, 9, 11, 30])
    whole = RawImages(index, x).small_views(view_recipe(cfg), 3)
    parts = [RawImages(index[s], x[s]).small_views(view_recipe(cfg), 3) for s in (slice(0, 3), slice(3, 8))]
    assert whole is not None and all(p is not None for p in parts)
    for v in range(2):  # view-major: view v of the whole batch is view v of each part, in order
        got = torch.cat([p[v * p.shape[0] // 2 : (v + 1) * p.shape[0] // 2] for p in parts if p is not None])
        torch.testing.assert_close(whole[v * B : (v + 1) * B], got, rtol=0, atol=1e-5)
    # small view j is keyed as view number views + j, after the full-size ones
    small = small_augment_config(cfg, aug)
    want = A.augment(x, index, seed=cfg.seed, epoch=3, view=cfg.views + 1, cfg=small)
    torch.testing.assert_close(whole[B:], want, rtol=0, atol=0)
    assert not torch.equal(whole[:B], whole[B:])  # two different draws
    assert not torch.equal(whole, RawImages(index, x).small_views(view_recipe(cfg), 4))  # a new epoch, new views


def test_small_crop_area_is_uniform_in_range():
    cfg = small_augment_config(cfg_with(), A.AugmentConfig(size=SIDE))
    n, side = 20000, 224
    full = torch.full((n,), float(side))
    p = A.sample_params(torch.arange(n), full, full, seed=0, epoch=0, view=2, cfg=cfg)
    area = p["crop_h"] * p["crop_w"] / side**2
    lo, hi = 0.05, 0.14
    slack = 2 * 224 / side**2  # rounding the box to whole pixels moves the area by about a pixel row
    assert area.min() >= lo - slack and area.max() <= hi + slack
    for q in (0.1, 0.25, 0.5, 0.75, 0.9):  # quantiles of Uniform(lo, hi), within ~5 standard errors
        assert abs(area.quantile(q).item() - (lo + q * (hi - lo))) < 0.003, q
    ratio = (p["crop_w"] / p["crop_h"]).log()  # the full-size views' aspect-ratio law
    assert ratio.min() >= math.log(3 / 4) - 0.03 and ratio.max() <= math.log(4 / 3) + 0.03
    assert abs(ratio.mean().item()) < 0.01
    assert (p["top"] + p["crop_h"] <= side).all() and (p["left"] + p["crop_w"] <= side).all()


def test_small_views_take_the_colour_ops():
    """Same settings as the full-size views but the side and the area range (flip, colour, blur kept)."""
    aug = A.AugmentConfig(size=32, flip=False, color_strength=1.0, blur=True)
    small = small_augment_config(cfg_with(image_size=32, small_crop_size=12), aug)
    assert small == dataclasses.replace(aug, size=12, min_scale=0.05, max_scale=0.14)


# --- refusals -----------------------------------------------------------------------------------


def test_text_runs_refuse_small_crops():
    cfg = dataclasses.replace(config.Config(), arch="hf:minilm", data="text:x.txt", small_crops=2)
    with pytest.raises(UserError, match="small_crops=2"):
        config.validate(cfg)


def test_views_cropped_by_loader_workers_are_refused():
    """The large-image path ships [V, b, 3, S, S] crops (or finished float views): no small views there."""
    cfg = cfg_with()
    cropped = torch.zeros(2, B, 3, SIDE, SIDE, dtype=torch.uint8)
    finished = torch.zeros(2 * B, 3, SIDE, SIDE)
    for batch in (CroppedViews(torch.arange(B), cropped), FinishedViews(torch.arange(B), finished)):
        with pytest.raises(UserError, match="small_crops=2 needs images held in memory") as e:
            batch.small_views(view_recipe(cfg), 0)
        assert "\n" not in str(e.value)


# --- the loss -----------------------------------------------------------------------------------


def reference_nt_xent(z: torch.Tensor, n: int, temperature: float) -> float:
    """Multi-positive NT-Xent with plain loops: row r = v*n + i is view v of sample i; every other view of
    sample i is a positive; the loss of an anchor is the mean over its positives of -log softmax."""
    z = z.double()
    z = z / z.norm(dim=1, keepdim=True)
    rows = z.shape[0]
    total = 0.0
    for a in range(rows):
        sims = [float(z[a] @ z[k]) / temperature for k in range(rows)]
        denom = sum(math.exp(s) for k, s in enumerate(sims) if k != a)
        positives = [k for k in range(rows) if k != a and k % n == a % n]
        total += sum(-math.log(math.exp(sims[k]) / denom) for k in positives) / len(positives)
    return total / rows


@pytest.mark.parametrize("small_crops", [1, 2, 4])
def test_loss_over_full_and_small_views_equals_reference(small_crops):
    cfg = cfg_with(small_crops=small_crops, temperature=0.3)
    n = 5
    z = torch.randn((2 + small_crops) * n, 7, generator=torch.Generator().manual_seed(small_crops))
    got = contrastive_loss(z, cfg, step=0).item()
    assert got == pytest.approx(reference_nt_xent(z, n, 0.3), rel=1e-5)


def test_identical_embeddings_give_log_of_all_other_views():
    cfg = cfg_with(small_crops=3)
    z = torch.ones(5 * B, 4)
    assert contrastive_loss(z, cfg, 0).item() == pytest.approx(math.log(5 * B - 1), rel=1e-6)


@pytest.mark.parametrize("loss", ["nt_logistic", "margin_triplet"])
def test_other_losses_take_the_total_view_count(loss):
    cfg = cfg_with(small_crops=2, loss=loss, max_negatives=5)
    z = torch.randn(4 * B, 6, generator=torch.Generator().manual_seed(0), requires_grad=True)
    value = contrastive_loss(z, cfg, 0)
    value.backward()
    assert torch.isfinite(value) and z.grad is not None and (z.grad.abs().sum(1) > 0).all()


# --- the step -----------------------------------------------------------------------------------


class NoBN(nn.Module):
    """Conv encoder + head without BN, float64: a view's z depends on that view only (any input size)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()
        )  # fmt: skip
        self.head = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 6))
        self.double()

    def forward(self, x):
        h = self.encoder(x)
        return h, self.head(h)


def step_inputs(b: int = B, dtype=torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(2 * b, 3, 8, 8, generator=g, dtype=dtype), torch.randn(2 * b, 3, 4, 4, generator=g, dtype=dtype)


def grads_of(model: nn.Module, cfg: config.Config, x, small, on_h=None) -> tuple[float, dict]:
    value = forward_backward(model, x, objective(cfg), 0, torch.device("cpu"), "fp32", on_h, small)
    return value.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_step_loss_is_the_loss_of_both_groups_concatenated():
    cfg = cfg_with()
    model = NoBN()
    x, small = step_inputs()
    seen = []
    value, _ = grads_of(model, cfg, x, small, seen.append)
    with torch.no_grad():
        z = torch.cat([model(x)[1], model(small)[1]])
    assert value == pytest.approx(reference_nt_xent(z, B, cfg.temperature), rel=1e-5)
    assert len(seen) == 1 and seen[0].shape == (2 * B, 8)  # on_h: the full-size views' h only


def test_step_refuses_views_that_do_not_match_the_config():
    x, small = step_inputs()
    with pytest.raises(ValueError, match="small views missing"):
        forward_backward(NoBN(), x, objective(cfg_with()), 0, torch.device("cpu"), "fp32")
    with pytest.raises(ValueError, match="small views given"):
        forward_backward(NoBN(), x, objective(cfg_with(small_crops=0)), 0, torch.device("cpu"), "fp32", None, small)


@pytest.mark.parametrize("chunk_size", [3, 8])
def test_gradient_cache_equals_one_pass_with_small_views(chunk_size):
    cfg = cfg_with(max_negatives=9)
    x, small = step_inputs()
    ref_value, ref = grads_of(NoBN(), cfg, x, small)
    seen = []
    value, got = grads_of(NoBN(), dataclasses.replace(cfg, chunk_size=chunk_size), x, small, seen.append)
    assert value == pytest.approx(ref_value, rel=1e-6)
    for name in ref:
        torch.testing.assert_close(got[name], ref[name], rtol=1e-5, atol=1e-9)
    torch.testing.assert_close(seen[0], NoBN()(x)[0].detach())  # the full-size views' h, in x's row order


@pytest.mark.parametrize("sets", [{}, {"chunk_size": 8}, {"max_negatives": 5}])
def test_step_with_small_views_has_no_host_sync(sets, monkeypatch):
    """One training step (views, forward per size group, loss, backward, update) under ``NoHostSync``."""
    from fastclr.method.lars import build_optimizer
    from fastclr.train.restore import build_model
    from fastclr.train.step import objective, train_step

    monkeypatch.setattr(A, "gathers", lambda device: False)  # the accelerator's choice
    cfg = cfg_with(arch="resnet_micro", image_size=8, small_crop_size=8, **sets)
    torch.manual_seed(0)
    model = build_model(cfg).to(memory_format=torch.channels_last).train()
    optimizer = build_optimizer(model, cfg.optimizer, 0.1, cfg.weight_decay, cfg.momentum, cfg.trust_coefficient)
    x, index = images(side=12), torch.arange(B)

    def step(i: int) -> torch.Tensor:
        full = RawImages(index, x).views(view_recipe(cfg), 0).contiguous(memory_format=torch.channels_last)
        small = RawImages(index, x).small_views(view_recipe(cfg), 0)
        return train_step(model, optimizer, full, objective(cfg), i, torch.device("cpu"), "fp32", None, small)

    step(0)  # constants reach the device once
    mode = NoHostSync()
    with mode:
        value = step(1)
    assert mode.ops > 100 and torch.isfinite(value)


# --- one process equals two ----------------------------------------------------------------------


def _two_process_case(chunk_size: int, rank: int, world: int) -> dict:
    """One step on this rank's slice: global BN (SimCLR, one pass) or the gradient cache (NoBN, float64)."""
    cfg = cfg_with(chunk_size=chunk_size, max_negatives=9)
    torch.manual_seed(0)
    model: nn.Module = NoBN() if chunk_size else SimCLR("resnet_mini", cifar_stem=True, head_layers=2, proj_dim=16)
    if world > 1 and not chunk_size:
        model = dist.sync_batchnorm(model, torch.device("cpu"))
    net = dist.wrap(model, torch.device("cpu"))
    x, small = step_inputs(dtype=torch.float64 if chunk_size else torch.float32)  # inputs differ across ranks
    b = B // world

    def mine(t: torch.Tensor) -> torch.Tensor:  # this rank's views, view-major over its samples
        return torch.cat([t[v * B + rank * b : v * B + (rank + 1) * b] for v in range(2)])

    value = forward_backward(net, mine(x), objective(cfg), 3, torch.device("cpu"), "fp32", None, mine(small))
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    return {"loss": value.item(), "grads": grads}


def _worker(path: str) -> None:
    results = {c: _two_process_case(c, dist.rank(), dist.world_size()) for c in (0, 3)}
    if dist.is_main():
        torch.save(results, path)


@pytest.mark.slow
def test_two_processes_equal_one_with_small_views(tmp_path):
    path = tmp_path / "results.pt"
    run_ranks(2, _worker, str(path))
    got = torch.load(path, weights_only=True)
    for chunk_size in (0, 3):
        ref = _two_process_case(chunk_size, 0, 1)
        assert got[chunk_size]["loss"] == pytest.approx(ref["loss"], rel=1e-6), chunk_size
        for name, g in ref["grads"].items():
            rel = (got[chunk_size]["grads"][name] - g).abs().max() / g.abs().max().clamp_min(1e-12)
            assert rel < 1e-4, (chunk_size, name, float(rel))
