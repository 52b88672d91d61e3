"""Small fixtures for the evaluation tests: a labelled image folder and a checkpoint, in seconds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fastclr import config
from fastclr.method.model import SimCLR
from fastclr.train import checkpoint


def digit_folder(root: Path, train_per_class: int = 12, test_per_class: int = 4, classes: int = 10) -> Path:
    """train/<digit>/*.png and test/<digit>/*.png from scikit-learn's digits (8x8 greyscale as RGB)."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)
    for c in range(classes):
        members = np.flatnonzero(d.target == c)
        for split, lo, n in (("train", 0, train_per_class), ("test", train_per_class, test_per_class)):
            folder = root / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for j, i in enumerate(members[lo : lo + n]):
                Image.fromarray(np.repeat(images[i][:, :, None], 3, 2)).save(folder / f"{j:03d}.png")
    return root


def make_checkpoint(
    path: Path,
    data: str,
    arch: str = "resnet_mini",
    cifar_stem: bool = True,
    image_size: int = 8,
    seed: int = 0,
    **fields,
) -> tuple[Path, SimCLR]:
    """A fastclr checkpoint of a randomly initialised (BN statistics perturbed) network, fp32 on the CPU."""
    cfg = config.Config(
        data=data,
        arch=arch,
        cifar_stem=cifar_stem,
        image_size=image_size,
        precision="fp32",
        device="cpu",
        flip=False,
        min_scale=0.3,
        eval_batch_size=64,
        **fields,
    )
    torch.manual_seed(seed)
    model = SimCLR(cfg.arch, cfg.cifar_stem, cfg.head_layers, cfg.head_hidden or None, cfg.proj_dim)
    with torch.no_grad():  # non-trivial BN statistics, so "BN stayed frozen" is a real check
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    checkpoint.save(
        {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
            "config": config.to_dict(cfg),
            "model": model.state_dict(),
            "step": 0,
        },
        path,
    )
    return path, model


def cli(*args: str) -> subprocess.CompletedProcess:
    """Run ``fastclr ARGS`` in this process (``python -m fastclr`` exits with main's return), capturing its output."""
    import contextlib
    import io

    from fastclr.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(["fastclr", *args], code, out.getvalue(), err.getvalue())


def cli_subprocess(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``fastclr ARGS`` in a fresh interpreter: exit code and streams exactly as a user sees them."""
    return subprocess.run(
        [sys.executable, "-m", "fastclr", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def last_json(r: subprocess.CompletedProcess) -> dict:
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def teacher_and_student(ckpt: Path, folder: Path, out: Path) -> tuple[dict, dict]:
    """``fastclr finetune`` on half the labels for 1 epoch, then ``fastclr distill`` of that teacher into a
    resnet_micro student (1 epoch, alpha 0.5): both result lines."""
    tune = ("--label-fraction", "0.5", "--epochs", "1", "--out", str(out / "ft"))
    teacher = last_json(cli("finetune", "--checkpoint", str(ckpt), *tune))
    student = ("--student-arch", "resnet_micro", "--epochs", "1", "--alpha", "0.5", "--out", str(out / "st"))
    return teacher, last_json(cli("distill", "--teacher", teacher["checkpoint"], "--data", str(folder), *student))


def one_line_error(r: subprocess.CompletedProcess) -> str:
    """Assert exit 2 with exactly one line on stderr and no traceback; return that line."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip() and not ln.startswith("fastclr: data: ")]
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr  # besides the data tier's one info line
    return lines[0]


def brute_force_knn_top1(train_f, train_y, test_f, test_y, num_classes: int, k: int, temperature: float) -> float:
    """Weighted kNN written out by hand: for each test row, cosine similarity to every train row, the k
    largest vote exp(sim / T) for their label, the label with the most weight wins (ties: the lowest label;
    the reference). Numpy in float64 throughout: one matmul for every similarity, no library code."""
    a, b = _float64(train_f), _float64(test_f)
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    sims = b @ a.T  # [test, train] cosine similarities
    near = np.argsort(-sims, axis=1, kind="stable")[:, : min(k, a.shape[0])]  # [test, k] most similar first
    labels = _float64(train_y).astype(np.int64)
    votes = np.zeros((b.shape[0], num_classes))
    rows = np.repeat(np.arange(b.shape[0]), near.shape[1])
    np.add.at(votes, (rows, labels[near].ravel()), np.exp(np.take_along_axis(sims, near, 1) / temperature).ravel())
    return float((votes.argmax(1) == _float64(test_y).astype(np.int64)).mean())


def _float64(x) -> np.ndarray:
    """A tensor (any dtype or device) or array as a float64 numpy array."""
    return x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float64)


def run_knn_reference(out: Path, baseline: bool = False) -> float:
    """kNN top-1 of a pretraining run's final weights (``baseline``: its random-init encoder), recomputed
    from ``OUT/checkpoints/last.pt`` with the hand-written vote: what the run's ``eval`` must report."""
    from fastclr.data import datasets
    from fastclr.eval.evaluate import FeatureSettings, split_features
    from fastclr.pipeline import random_init_like
    from fastclr.train import restore
    from fastclr.train.precision import resolve

    restored = restore.open_checkpoint(Path(out) / "checkpoints" / "last.pt")
    cfg, device = restored.cfg, torch.device("cpu")
    model = random_init_like(cfg, device) if baseline else restored.model
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    data = datasets.load(cfg.data, cfg.image_size)
    settings = FeatureSettings(
        cfg.image_size, device, cfg.eval_batch_size, resolve(cfg.precision, device), cfg.channels_last
    )
    train_f, test_f = split_features(model.eval().encode, data.train, data.test, settings)
    classes = data.train.num_classes
    return brute_force_knn_top1(
        train_f, data.train.labels, test_f, data.test.labels, classes, cfg.knn_k, cfg.knn_temperature
    )
