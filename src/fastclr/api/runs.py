"""Pretraining and evaluation from Python: the same runs and results as the CLI's commands.

:func:`pretrain` resolves a config as ``fastclr pretrain`` does (dataclass defaults, then the
preset or YAML file, then the keyword overrides; resuming an ``out`` folder starts from its own
``config.yaml``) and runs :func:`fastclr.pipeline.pretrain_and_evaluate`; the returned dict is the
command's JSON line. :func:`knn_eval` and :func:`linear_eval` are ``fastclr knn`` and ``fastclr linear``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastclr.config import Config, build_config, from_dict, parse_value, to_dict
from fastclr.eval import linear
from fastclr.eval.evaluate import run_knn
from fastclr.pipeline import pretrain_and_evaluate, resolve_config
from fastclr.train import preflight
from fastclr.train.callbacks import Callback


def load_config(name_or_file: str | Path = "digits", **overrides: Any) -> Config:
    """A run configuration: a preset name (``digits``, ``cifar10_cpu``, ...) or a YAML file, then ``overrides``.

    Args:
        name_or_file: a preset shipped in ``fastclr/configs`` or your own YAML file.
        overrides: any :class:`fastclr.Config` field, e.g. ``epochs=5, temperature=0.2``.
    Returns:
        the validated :class:`fastclr.Config`.
    Raises:
        fastclr.errors.UserError: an unknown preset or key, or a value out of range (one line saying which).
    """
    cfg = build_config(str(name_or_file), overrides, [])
    preflight.settings(cfg)
    return cfg


def _config_of(config: Config | str | Path | None, overrides: dict[str, Any], resume: bool = True) -> Config:
    """The config ``fastclr pretrain`` would run with ``--config config`` and the overrides as flags
    (:func:`fastclr.pipeline.resolve_config`); a :class:`Config` object takes the overrides on top."""
    if isinstance(config, Config):
        return from_dict({**to_dict(config), **{k: parse_value(k, v) for k, v in overrides.items()}})
    return resolve_config(None if config is None else str(config), overrides, [], resume)


def pretrain(
    config: Config | str | Path | None = None,
    *,
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
    **overrides: Any,
) -> dict[str, Any]:
    """SimCLR pretraining, then kNN and linear evaluation against a random-init encoder: ``fastclr pretrain``.

    Args:
        config: a :class:`fastclr.Config`, a preset name or a YAML file (default: the ``digits`` preset).
        resume: continue from ``out/checkpoints`` when a run is there (False: start over).
        callbacks: :class:`fastclr.train.callbacks.Callback` hooks into the loop (after the monitors).
        overrides: any config field, e.g. ``epochs=5, out="runs/try", data="/data/images"``.
    Returns:
        the command's JSON result: ``out``, ``epochs``, ``steps``, ``final_loss``, ``images_per_s``,
        ``skipped`` and, for labelled data, ``eval`` (``knn_top1``, ``linear_top1``, ... and the
        random-init baseline's). The checkpoint is ``out/checkpoints/last.pt``.
    """
    return pretrain_and_evaluate(_config_of(config, overrides, resume), resume=resume, callbacks=callbacks)


def knn_eval(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    k: int | Sequence[int] = (20, 200),
    temperature: float = 0.1,
    batch_size: int = 512,
    device: str | None = None,
    random_init: bool = False,
    seed: int = 0,
) -> dict[str, Any]:
    """Weighted kNN accuracy on L2-normalised h, train split -> test split: ``fastclr knn``.

    Args:
        checkpoint: a fastclr checkpoint.
        data: a labelled data spec with a test split (default: the data the checkpoint was trained on).
        k: neighbour count(s); temperature: T of the vote weights exp(sim / T) (DINO's protocol).
        batch_size: test images compared with the bank at a time.
        device: "cpu", "cuda" (default: the checkpoint's setting).
        random_init: the same architecture with random weights (seeded by ``seed``): the baseline.
    Returns:
        ``{"knn": {"20": top1, "200": top1}, "temperature": T, "encoder": source}`` (fractions).
    """
    ks = sorted({k} if isinstance(k, int) else set(k))
    return run_knn(
        str(checkpoint),
        data,
        ks=ks,
        temperature=temperature,
        batch_size=batch_size,
        device=device,
        random_init=random_init,
        seed=seed,
    )


def linear_eval(
    checkpoint: str | Path,
    data: str | None = None,
    *,
    features: bool = False,
    epochs: int = 90,
    batch_size: int = 256,
    lr: float = 0.1,
    seed: int = 0,
    device: str | None = None,
    random_init: bool = False,
) -> dict[str, Any]:
    """Linear evaluation of a checkpoint's frozen encoder (SimCLR Appendix B.6): ``fastclr linear``.

    Args:
        checkpoint: a fastclr checkpoint.
        data: a labelled data spec with a test split (default: the data the checkpoint was trained on).
        features: L-BFGS logistic regression on cached h (the transfer protocol) instead of SGD on
            crop-and-flip views (the paper's linear evaluation).
        epochs, batch_size, lr: the SGD protocol's settings (lr scaled by B/256, cosine-decayed).
        device: "cpu", "cuda" (default: the checkpoint's setting).
        random_init: the same architecture with random weights: the baseline.
    Returns:
        ``{"protocol", "top1", "top5", "encoder", ...}`` (fractions).
    Raises:
        fastclr.errors.UserError: a setting out of range, e.g. ``--epochs 0: must be > 0`` (the command's line).
    """
    return linear.command(
        str(checkpoint),
        data,
        features=features,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        random_init=random_init,
    )
