"""Score a frozen encoder: features of the train and test splits, then weighted kNN and a linear probe.

The one place where "extract features, then score them" is written: the end of pretraining,
the kNN monitor, ``fastclr knn``, ``fastclr linear --features`` and the report all call it.
kNN is the weighted vote of :mod:`fastclr.eval.knn` (not in the paper; Wu et al. 2018, DINO); the
probe is the L-BFGS logistic regression of :mod:`fastclr.eval.probe` (SimCLR section 4, Appendix B.5).
The random-init encoder of the same architecture is the baseline every number is compared to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from fastclr.data.sets import ImageSet
from fastclr.errors import UserError
from fastclr.eval.features import extract
from fastclr.eval.knn import knn_predict, topk_accuracy
from fastclr.eval.probe import linear_probe
from fastclr.train import restore


@dataclass(frozen=True)
class FeatureSettings:
    """How features are computed: evaluation view of side ``size``, batches of ``batch_size``."""

    size: int
    device: torch.device
    batch_size: int = 512
    precision: str = "fp32"
    channels_last: bool = False


@dataclass
class Scores:
    """kNN top-1 per k, and the linear probe's top1 / top5 / chosen l2 (None when not run)."""

    knn: dict[int, float] = field(default_factory=dict)
    linear: dict[str, float] | None = None


def split_features(
    encode: Callable[[torch.Tensor], torch.Tensor], train: ImageSet, test: ImageSet, settings: FeatureSettings
) -> tuple[torch.Tensor, torch.Tensor]:
    """h of every train image, then of every test image: float32 [N_train, d], [N_test, d] on ``settings.device``."""
    s = settings
    train_f = extract(encode, train.images, s.size, s.device, s.batch_size, s.precision, s.channels_last)
    test_f = extract(encode, test.images, s.size, s.device, s.batch_size, s.precision, s.channels_last)
    return train_f, test_f


def score(
    train_f: torch.Tensor,
    train: ImageSet,
    test_f: torch.Tensor,
    test: ImageSet,
    *,
    knn_k: Sequence[int] = (200,),
    knn_temperature: float = 0.1,
    knn_batch_size: int = 1024,
    linear: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> Scores:
    """kNN (one accuracy per k) and, with ``linear``, the probe; labels and class count from the splits.

    The probe is fitted in float32 on ``device`` (default: the features' device).
    """
    assert train.labels is not None and test.labels is not None, "scoring needs labelled splits"
    classes = train.num_classes
    scores = Scores()
    for k in knn_k:
        votes = knn_predict(train_f, train.labels, test_f, classes, k, knn_temperature, knn_batch_size)
        scores.knn[k] = topk_accuracy(votes, test.labels)
    if linear:
        scores.linear = linear_probe(train_f, train.labels, test_f, test.labels, classes, seed=seed, device=device)
    return scores


def evaluate(
    model: nn.Module,
    train: ImageSet,
    test: ImageSet,
    settings: FeatureSettings,
    *,
    knn_k: Sequence[int] = (200,),
    knn_temperature: float = 0.1,
    knn_batch_size: int = 1024,
    linear: bool = True,
    seed: int = 0,
) -> Scores:
    """Features of ``model.encode`` in eval mode (BN running statistics; the mode is put back), then :func:`score`."""
    was_training = model.training
    model.eval()
    try:
        train_f, test_f = split_features(model.encode, train, test, settings)  # type: ignore[arg-type]
    finally:
        model.train(was_training)
    return score(
        train_f,
        train,
        test_f,
        test,
        knn_k=knn_k,
        knn_temperature=knn_temperature,
        knn_batch_size=knn_batch_size,
        linear=linear,
        seed=seed,
        device=settings.device,
    )


def against_random_init(
    model: nn.Module,
    baseline: Callable[[], nn.Module],
    train: ImageSet,
    test: ImageSet,
    settings: FeatureSettings,
    *,
    knn_k: int,
    knn_temperature: float,
    seed: int,
) -> dict[str, float]:
    """The result's ``eval`` entry: kNN and probe of ``model``, and of the random-init encoder ``baseline()`` builds."""
    ours = evaluate(model, train, test, settings, knn_k=(knn_k,), knn_temperature=knn_temperature, seed=seed)
    base = evaluate(baseline(), train, test, settings, knn_k=(knn_k,), knn_temperature=knn_temperature, seed=seed)
    assert ours.linear is not None and base.linear is not None
    return {
        "knn_top1": ours.knn[knn_k],
        "linear_top1": ours.linear["top1"],
        "linear_top5": ours.linear["top5"],
        "linear_l2": ours.linear["l2"],  # chosen on held-out train images (probe.L2_GRID)
        "random_init_knn_top1": base.knn[knn_k],
        "random_init_linear_top1": base.linear["top1"],
    }


def run_knn(
    checkpoint: str,
    data: str | None = None,
    *,
    ks: Sequence[int] = (20, 200),
    temperature: float = 0.1,
    batch_size: int = 512,
    device: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> dict:
    """``fastclr knn``: weighted kNN top-1 of a checkpoint's encoder for every k, train split -> test split.

    Weighted kNN on L2-normalised h: votes exp(sim / T) of the k nearest training images (DINO's
    protocol). ``batch_size`` test images are compared with the bank at a time (bounds memory).
    """
    if not ks or min(ks) < 1 or temperature <= 0 or batch_size < 1:
        raise UserError("--k values must be >= 1, --temperature > 0 and --batch-size >= 1")
    opened = restore.open_labelled("knn", checkpoint, data, device, random_init, seed)
    cfg = opened.restored.cfg
    settings = FeatureSettings(cfg.image_size, opened.device, cfg.eval_batch_size, opened.precision)
    scores = evaluate(
        opened.restored.model,
        opened.train,
        opened.test,
        settings,
        knn_k=sorted(set(ks)),
        knn_temperature=temperature,
        knn_batch_size=batch_size,
        linear=False,
    )
    return {
        "knn": {str(k): acc for k, acc in scores.knn.items()},
        "temperature": temperature,
        "encoder": opened.restored.source,
    }
