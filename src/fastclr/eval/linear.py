"""Linear evaluation: a linear classifier on the frozen representation h (SimCLR v1 Appendix B.6).

Two protocols:

* ``sgd`` (the paper's linear evaluation): the encoder is frozen, BN statistics included (eval
  mode, no gradient), and a linear layer on h is trained with SGD + Nesterov momentum on random
  crop-and-flip views, no weight decay, cosine-decayed learning rate 0.1 x B/256 (the reference
  code's linear-eval setting); top-1 and top-5 on the test split. The views are the paper's, not
  the pretraining config's: random resized crop of area 0.08-1 and flip for training; for testing
  resize + centre crop, with crop proportion 0.875 for images of 96 px and more
  (:mod:`fastclr.eval.supervised`). ``min_scale``, ``flip`` and ``crop`` override them.
* ``features`` (the transfer protocol, v1 section 4 / Appendix B.5): h computed once on the
  evaluation views, an L-BFGS logistic regression whose L2 penalty is chosen on a held-out part
  of the train split (:func:`fastclr.eval.probe.linear_probe`).

As moco-v3's linear probe does, :func:`linear_eval` ends by checking that no encoder weight or
BN statistic moved.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fastclr import log
from fastclr.data.datasets import ImageSet
from fastclr.eval import supervised
from fastclr.eval.evaluate import FeatureSettings, evaluate
from fastclr.method.augment import AugmentConfig
from fastclr.method.model import SimCLR


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer (BN running statistics and counters included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(module: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that differ (bit for bit) from ``before``."""
    now = module.state_dict()
    return [k for k, v in before.items() if not torch.equal(v, now[k])]


def train_classifier(
    model: SimCLR,
    train: ImageSet,
    num_classes: int,
    *,
    aug: AugmentConfig,
    epochs: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device,
    precision: str = "fp32",
) -> nn.Linear:
    """Train Linear(d, num_classes) on h = f(crop_flip(x)) with f frozen in eval mode.

    The classifier starts as the reference code's supervised head: weights N(0, 0.01^2), bias 0.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fc = nn.Linear(model.feature_dim, num_classes).to(device)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 0.01)
        fc.bias.zero_()
    assert train.labels is not None, "linear evaluation needs a labelled train split"
    labels = train.labels.to(device)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = model.encode(x)  # [b, d]; no graph through the frozen encoder
        return fc(h.float())

    supervised.fit(
        forward,
        list(fc.parameters()),
        train.images,
        lambda logits, index, _x: F.cross_entropy(logits, labels[index]),
        aug=aug,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        precision=precision,
        desc="linear",
    )
    return fc


def linear_eval(
    model: SimCLR,
    train: ImageSet,
    test: ImageSet,
    num_classes: int,
    *,
    aug: AugmentConfig,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    crop: float = 1.0,
) -> dict[str, float]:
    """The SGD protocol end to end; returns top1 and top5 (fractions) on ``test``.

    ``crop`` is the evaluation view's centre-crop proportion (:func:`fastclr.eval.supervised.eval_view`).

    Raises RuntimeError if any encoder tensor changed: that would invalidate the protocol.
    """
    before = snapshot(model)
    fc = train_classifier(
        model,
        train,
        num_classes,
        aug=aug,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=torch.device(device),
        precision=precision,
    )
    encode = model.encode
    logits = supervised.predict(
        lambda x: fc(encode(x).float()), test.images, aug.size, torch.device(device), precision, crop=crop
    )
    moved = changed(model, before)
    if moved:
        raise RuntimeError(f"linear evaluation changed the frozen encoder: {moved[:5]}")
    assert test.labels is not None, "linear evaluation needs a labelled test split"
    return supervised.accuracy(logits, test.labels)


def features_eval(
    model: SimCLR,
    train: ImageSet,
    test: ImageSet,
    *,
    size: int,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    batch_size: int = 512,
) -> dict[str, float]:
    """The transfer protocol: L-BFGS logistic regression on cached h, L2 penalty chosen on held-out train data."""
    settings = FeatureSettings(size, torch.device(device), batch_size, precision)
    scores = evaluate(model, train, test, settings, knn_k=(), seed=seed)  # the probe fits on settings.device
    assert scores.linear is not None
    return scores.linear


def run(
    checkpoint: str,
    data: str | None = None,
    *,
    features: bool = False,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    device: str | None = None,
    random_init: bool = False,
    min_scale: float = supervised.PAPER_MIN_SCALE,
    flip: bool = True,
    crop: float | None = None,
) -> dict:
    """``fastclr linear``: the SGD protocol (default) or the L-BFGS transfer protocol (``features``).

    The SGD protocol's views do not depend on the pretraining config: crop area ``min_scale``-1
    and ``flip`` for training (paper: 0.08, on), evaluation centre crop ``crop`` (None: 0.875 for
    images of 96 px and more, else the whole image).
    """
    from fastclr.train import restore

    restored, dev, precision = restore.open_for_command(checkpoint, device, random_init, seed)
    cfg = restored.cfg
    train, test = restore.labelled_splits(restore.load_data(cfg, data), "linear")
    classes = train.num_classes
    if features:
        log.info(f"linear (features): L-BFGS on cached h, {len(train)} train / {len(test)} test images")
        result = features_eval(
            restored.model,
            train,
            test,
            size=cfg.image_size,
            seed=seed,
            device=dev,
            precision=precision,
            batch_size=cfg.eval_batch_size,
        )
        return {
            "protocol": "features",
            "top1": result["top1"],
            "top5": result["top5"],
            "l2": result["l2"],
            "encoder": restored.source,
        }
    crop = supervised.crop_proportion(cfg.image_size) if crop is None else crop
    log.info(
        f"linear (sgd): {epochs} epochs, batch {batch_size}, {len(train)} train / {len(test)} test images, "
        f"crop area {min_scale}-1, flip {'on' if flip else 'off'}, test crop {crop}, {dev} {precision}"
    )
    aug = supervised.crop_flip(cfg.image_size, min_scale, flip)
    result = linear_eval(
        restored.model,
        train,
        test,
        classes,
        aug=aug,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=dev,
        precision=precision,
        crop=crop,
    )
    return {
        "protocol": "sgd",
        "top1": result["top1"],
        "top5": result["top5"],
        "epochs": epochs,
        "min_scale": min_scale,
        "flip": flip,
        "crop": crop,
        "encoder": restored.source,
    }
