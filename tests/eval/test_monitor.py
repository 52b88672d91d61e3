"""Pretraining monitors: the online probe never touches the encoder and learns; kNN and probe reach metrics.jsonl."""

import json

import pytest
import torch

from evalkit import cli, last_json, run_knn_reference
from fastclr.eval.monitor import OnlineProbe
from fastclr.method.model import SimCLR


def test_online_probe_leaves_encoder_gradients_alone():
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True)
    h, _ = model(torch.randn(6, 3, 8, 8))
    probe = OnlineProbe(model.feature_dim, 3, torch.device("cpu"))
    probe.update(h, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert all(p.grad is None for p in model.parameters())
    assert probe.fc.weight.grad is not None


def test_online_probe_learns_and_resets():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 16, generator=g) * 3
    probe = OnlineProbe(16, 4, torch.device("cpu"), lr=0.05)
    for _ in range(60):
        y = torch.randint(0, 4, (32,), generator=g)
        probe.update(centres[y] + torch.randn(32, 16, generator=g), y)
    first = probe.read()
    assert first["online_probe_top1"] > 0.8 and first["online_probe_loss"] > 0
    assert probe.read() == {}  # read() resets the running sums


def test_pretrain_logs_monitors_and_saves_the_probe(tmp_path):
    out = tmp_path / "run"
    args = [
        "pretrain",
        "--out",
        str(out),
        "--batch-size",
        "64",
        "--epochs",
        "2",
        "--max-steps",
        "8",
        "--set",
        "max_images=256",
        "--set",
        "image_size=8",
        "--set",
        "eval=false",
        "--set",
        "knn_every=1",
        "--set",
        "online_probe=true",
        "--set",
        "precision=fp32",
    ]
    last_json(cli(*args))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    monitored = [r for r in records if "knn_top1" in r]
    assert [r["epoch"] for r in monitored] == [1.0, 2.0]
    assert all("online_probe_top1" in r and "online_probe_loss" in r for r in monitored)
    # the epoch-2 kNN is that of the step-8 weights saved in last.pt, by a hand-written vote
    assert monitored[-1]["knn_top1"] == pytest.approx(run_knn_reference(out), abs=1e-6)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=True)
    width = SimCLR(state["config"]["arch"], True).feature_dim  # the preset's encoder width
    assert state["monitor"]["online_probe"]["fc"]["weight"].shape == (10, width)


VIEWS, BATCH, DIM, CLASSES, STEPS = 2, 8, 6, 3, 4


def probe_inputs(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One step's global batch: h [V*B, d] view-major and its labels (the same for every view)."""
    g = torch.Generator().manual_seed(100 + step)
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    return torch.randn(VIEWS * BATCH, DIM, generator=g), y.repeat(VIEWS)


def run_probe(rank: int, world: int) -> dict:
    """The probe fed this rank's share of every step (view-major rows of its b = B/k samples)."""
    torch.manual_seed(0)
    probe = OnlineProbe(DIM, CLASSES, torch.device("cpu"))
    b = BATCH // world
    mine = torch.cat([torch.arange(b) + rank * b + v * BATCH for v in range(VIEWS)])
    for step in range(STEPS):
        h, y = probe_inputs(step)
        probe.update(h[mine], y[mine], VIEWS)
    return {"read": probe.read(), **{k: v.clone() for k, v in probe.fc.state_dict().items()}}


def _probe_worker(path: str) -> None:
    from fastclr.train import dist

    torch.save(run_probe(dist.rank(), dist.world_size()), f"{path}.{dist.rank()}")


def test_online_probe_two_processes_equal_one(tmp_path):
    """Under torchrun the probe trains on the global batch: loss, accuracy and weights equal one process's."""
    from _spawn import run_ranks

    run_ranks(2, _probe_worker, str(tmp_path / "probe"))
    ref = run_probe(0, 1)
    for rank in range(2):
        got = torch.load(tmp_path / f"probe.{rank}", weights_only=True)
        assert got["read"]["online_probe_top1"] == ref["read"]["online_probe_top1"]
        assert got["read"]["online_probe_loss"] == pytest.approx(ref["read"]["online_probe_loss"], rel=1e-6)
        for key in ("weight", "bias"):
            assert torch.allclose(got[key], ref[key], rtol=1e-6, atol=1e-7), key
    # control: a probe fed one rank's half alone (the per-rank probe) ends elsewhere
    torch.manual_seed(0)
    half = OnlineProbe(DIM, CLASSES, torch.device("cpu"))
    for step in range(STEPS):
        h, y = probe_inputs(step)
        rows = torch.cat([torch.arange(BATCH // 2) + v * BATCH for v in range(VIEWS)])
        half.update(h[rows], y[rows], VIEWS)
    assert not torch.allclose(half.fc.weight, ref["weight"], atol=1e-4)


def test_knn_monitor_runs_on_rank_0_only(monkeypatch):
    """Under torchrun every rank holds the same encoder: only rank 0 (which writes metrics.jsonl) scores it."""
    import dataclasses

    from fastclr.config import Config
    from fastclr.data.sets import DataSplits, ImageSet
    from fastclr.eval.monitor import Monitors

    g = torch.Generator().manual_seed(0)
    split = ImageSet(torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8, generator=g), torch.arange(12) % 3, [])
    cfg = dataclasses.replace(Config(), image_size=8, knn_every=1, knn_k=3, precision="fp32")
    monitors = Monitors(cfg, 256, DataSplits("t", split, split, split), None, torch.device("cpu"), "fp32")
    model = SimCLR("resnet_mini", cifar_stem=True, head_layers=2, proj_dim=16)
    for rank, scored in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)  # what dist.rank() reads when no process group is started
        assert ("knn_top1" in monitors.epoch_end(model, 1)) is scored


def monitored_run(out, *extra: str) -> list[dict]:
    """A short digits run without the end-of-run evaluation; its metrics.jsonl records."""
    args = ["pretrain", "--out", str(out), "--batch-size", "64", "--epochs", "2", "--max-steps", "4"]
    for s in ("max_images=128", "image_size=8", "eval=false", "precision=fp32", *extra):
        args += ["--set", s]
    last_json(cli(*args))
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def assert_same(a, b, where: str = "") -> None:
    """Nested dicts / lists of tensors and primitives are equal, bit for bit."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def test_label_free_monitor_logs_its_figures_and_leaves_training_alone(tmp_path):
    """quality_every=1: the figures at each epoch's end; weights, optimiser, generators and losses as without it."""
    from fastclr.data import datasets
    from fastclr.eval import quality
    from fastclr.eval.evaluate import FeatureSettings
    from fastclr.eval.monitor import MONITORED
    from fastclr.train import restore
    from fastclr.train.step import augment_config

    plain = monitored_run(tmp_path / "plain")
    watched = monitored_run(tmp_path / "watched", "quality_every=1")
    monitored = [r for r in watched if "rankme" in r]
    assert [r["epoch"] for r in monitored] == [1.0, 2.0]
    assert all(set(MONITORED) <= r.keys() for r in monitored)
    losses = [r["loss"] for r in plain if "loss" in r]
    assert losses and losses == [r["loss"] for r in watched if "loss" in r]
    a, b = (torch.load(tmp_path / n / "checkpoints" / "last.pt", weights_only=True) for n in ("plain", "watched"))
    for key in ("model", "optimizer", "rng", "step"):
        assert_same(a[key], b[key], key)
    # the epoch-2 figures are those of the step-4 weights saved in last.pt, on the digits' test split
    restored = restore.open_checkpoint(tmp_path / "watched" / "checkpoints" / "last.pt")
    cfg = restored.cfg
    test = datasets.load(cfg.data, cfg.image_size).test
    settings = FeatureSettings(cfg.image_size, torch.device("cpu"), cfg.eval_batch_size, "fp32")
    figures = quality.measure(restored.model, test.images, augment_config(cfg), settings, cfg.seed + quality.VIEW_SEED)
    for key in MONITORED:
        assert monitored[-1][key] == pytest.approx(figures[key], rel=1e-5, abs=1e-6), key
