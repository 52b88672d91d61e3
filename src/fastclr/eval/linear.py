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

As moco-v3's linear probe does, :func:`frozen_eval` ends by checking that no encoder weight or
BN statistic moved.
"""

from __future__ import annotations

import torch
from torch import nn

from fastclr import log
from fastclr.data.sets import ImageSet
from fastclr.errors import require_fraction, require_positive
from fastclr.eval import supervised
from fastclr.eval.evaluate import FeatureSettings, evaluate
from fastclr.method.augment import AugmentConfig
from fastclr.method.model import SimCLR
from fastclr.train import restore


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every parameter and buffer (BN running statistics and counters included)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def changed(module: nn.Module, before: dict[str, torch.Tensor]) -> list[str]:
    """Names of the tensors that differ (bit for bit) from ``before``."""
    now = module.state_dict()
    return [k for k, v in before.items() if not torch.equal(v, now[k])]


def train_classifier(model: SimCLR, train: ImageSet, num_classes: int, recipe: supervised.Recipe) -> nn.Linear:
    """Train Linear(d, num_classes) on h = f(crop_flip(x)) with f frozen in eval mode.

    The classifier starts as the reference code's supervised head: weights N(0, 0.01^2), bias 0.
    """
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    fc = nn.Linear(model.feature_dim, num_classes).to(recipe.device)
    g = torch.Generator().manual_seed(recipe.seed)
    with torch.no_grad():
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=g) * 0.01)
        fc.bias.zero_()
    assert train.labels is not None, "linear evaluation needs a labelled train split"

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = model.encode(x)  # [b, d]; no graph through the frozen encoder
        return fc(h.float())

    loss = supervised.cross_entropy(train.labels.to(recipe.device))
    recipe.fit(forward, list(fc.parameters()), train.images, loss, desc="linear")
    return fc


def frozen_eval(
    model: SimCLR, train: ImageSet, test: ImageSet, num_classes: int, recipe: supervised.Recipe, crop: float = 1.0
) -> dict[str, float]:
    """The SGD protocol end to end; returns top1 and top5 (fractions) on ``test``.

    ``crop`` is the evaluation view's centre-crop proportion (:func:`fastclr.eval.supervised.cropped_eval_view`).

    Raises RuntimeError if any encoder tensor changed: that would invalidate the protocol.
    """
    before = snapshot(model)
    fc = train_classifier(model, train, num_classes, recipe)
    encode = model.encode
    accuracy = recipe.test(lambda x: fc(encode(x).float()), test, crop)
    moved = changed(model, before)
    if moved:
        raise RuntimeError(f"linear evaluation changed the frozen encoder: {moved[:5]}")
    return accuracy


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
    """:func:`frozen_eval` with these settings (the reference code's linear evaluation by default)."""
    recipe = supervised.Recipe(aug, epochs, batch_size, lr, seed, torch.device(device), precision)
    return frozen_eval(model, train, test, num_classes, recipe, crop)


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


def check_settings(epochs: int, batch_size: int, lr: float, min_scale: float, crop: float | None) -> None:
    """UserError (one line naming the flag) for a setting of :func:`command` out of its range."""
    require_positive(epochs=epochs, batch_size=batch_size, lr=lr)
    require_fraction("min_scale", min_scale, hint=" (paper: 0.08)")
    if crop is not None:
        require_fraction("crop_proportion", crop, hint=" (paper: 0.875 for ImageNet-size images)")


def command(
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

    Linear evaluation (SimCLR Appendix B.6): the encoder frozen with its BN statistics, a linear layer
    trained with Nesterov SGD and no weight decay on the paper's views, whatever the pretraining used:
    random resized crop (area ``min_scale``-1, paper 0.08) + ``flip`` for training, resize + centre crop
    ``crop`` for testing (None: 0.875 for images of 96 px and more, else the whole image). ``features``:
    L-BFGS logistic regression on cached h, the L2 penalty chosen among 45 values from 1e-6 to 1e5 on
    held-out train images (the transfer protocol, Appendix B.5; fast on a CPU).
    """
    check_settings(epochs, batch_size, lr, min_scale, crop)
    opened = restore.open_labelled("linear", checkpoint, data, device, random_init, seed)
    if features:
        return run_features(opened, seed)
    aug = supervised.crop_flip(opened.restored.cfg.image_size, min_scale, flip)
    return run_sgd(opened, supervised.Recipe(aug, epochs, batch_size, lr, seed, opened.device, opened.precision), crop)


def run_features(opened: restore.Labelled, seed: int) -> dict:
    """The transfer protocol on the command's model and data; the result line of ``fastclr linear --features``."""
    train, test, cfg = opened.train, opened.test, opened.restored.cfg
    log.info(f"linear (features): L-BFGS on cached h, {len(train)} train / {len(test)} test images")
    result = features_eval(
        opened.restored.model,
        train,
        test,
        size=cfg.image_size,
        seed=seed,
        device=opened.device,
        precision=opened.precision,
        batch_size=cfg.eval_batch_size,
    )
    return {"protocol": "features", **result, "encoder": opened.restored.source}  # top1, top5, l2


def run_sgd(opened: restore.Labelled, recipe: supervised.Recipe, crop: float | None) -> dict:
    """The SGD protocol on the command's model and data (``crop`` None: :func:`supervised.crop_proportion`);
    the result line of ``fastclr linear``."""
    train, test, aug = opened.train, opened.test, recipe.aug
    crop = supervised.crop_proportion(aug.size) if crop is None else crop
    log.info(
        f"linear (sgd): {recipe.epochs} epochs, batch {recipe.batch_size}, {len(train)} train / {len(test)} test "
        f"images, crop area {aug.min_scale}-1, flip {'on' if aug.flip else 'off'}, test crop {crop}, "
        f"{opened.device} {opened.precision}"
    )
    accuracy = frozen_eval(opened.restored.model, train, test, train.num_classes, recipe, crop)
    return {
        "protocol": "sgd",
        **accuracy,  # top1, top5
        "epochs": recipe.epochs,
        "min_scale": aug.min_scale,
        "flip": aug.flip,
        "crop": crop,
        "encoder": opened.restored.source,
    }
