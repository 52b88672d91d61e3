"""A short real pretraining run on CIFAR-10 JPEGs, and the step's bookkeeping."""

import json
import math

import pytest
import torch

from evalkit import run_knn_reference
from fastclr import config
from fastclr.data.loaders.base import RawImages
from fastclr.pipeline import pretrain_and_evaluate as pretrain
from fastclr.train.step import view_recipe


def test_short_real_run_on_cifar_jpegs(cifar_subset, tmp_path):
    cfg = config.build_config(
        "cifar10_cpu",
        {"data": str(cifar_subset), "out": str(tmp_path / "run")},
        ["max_images=0", "batch_size=64", "epochs=2", "warmup_epochs=0.5", "log_every=1", "workers=0"],
    )
    result = pretrain(cfg)
    assert result["steps"] == 2 * (300 // 64) and result["skipped"] == 0
    losses = [
        json.loads(line)["loss"]
        for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
        if "loss" in line
    ]
    assert len(losses) == result["steps"] and all(math.isfinite(x) for x in losses)
    assert losses[0] == pytest.approx(math.log(2 * 64 - 1), abs=0.5)  # starts near chance: log(2N - 1)
    ev = result["eval"]
    assert set(ev) == {
        "knn_top1", "linear_top1", "linear_top5", "linear_l2", "random_init_knn_top1", "random_init_linear_top1",
        "train_images", "test_images", "label_free", "random_init_label_free", "label_free_source",
    }  # fmt: skip
    # the JPEG pipeline end to end: the reported kNN is that of the saved weights, by a hand-written vote
    # (that pretraining beats random init is tests/test_learns.py's claim, on a schedule long enough to show it)
    assert ev["knn_top1"] == pytest.approx(run_knn_reference(tmp_path / "run"), abs=1e-6)


def test_views_are_view_major_and_keyed():
    cfg = config.build_config(None, {}, ["views=3", "image_size=8"])
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
    index = torch.tensor([5, 6, 7, 8])
    x = RawImages(index, images).views(view_recipe(cfg), 0)
    assert x.shape == (12, 3, 8, 8)
    again = RawImages(index[2:], images[2:]).views(view_recipe(cfg), 0)
    for v in range(3):  # row v*b + i is view v of sample i, whatever the batch holds
        assert torch.equal(x[v * 4 + 2 : v * 4 + 4], again[v * 2 : v * 2 + 2])
