"""Pretrain, then evaluate: what ``fastclr pretrain`` runs.

Training (:mod:`fastclr.train.loop`) knows nothing of evaluation; this layer joins them: it
builds the monitors of :mod:`fastclr.eval.monitor` as loop callbacks, runs the loop, then scores
the encoder with kNN and the linear probe against a random-init encoder of the same
architecture (:func:`fastclr.eval.evaluate.against_random_init`) and writes ``OUT/result.json``.
A text run is scored by :func:`fastclr.text.sts.evaluate_text` (STS-B Spearman, kNN / probe on
labelled texts) against the encoder at its starting weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch

from fastclr import config, log
from fastclr.data import evalset, tiers
from fastclr.data.datasets import DataSplits, ImageSet
from fastclr.eval.evaluate import FeatureSettings, against_random_init
from fastclr.eval.features import all_threads
from fastclr.eval.monitor import Monitors
from fastclr.method.model import SimCLR
from fastclr.train import checkpoint, dist, loop
from fastclr.train.callbacks import Callback
from fastclr.train.restore import build_model
from fastclr.train.tracking import TrackerCallback, Trackers


def pretrain_and_evaluate(
    cfg: config.Config, resume: bool = True, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Pretrain as configured (resuming from ``OUT/checkpoints``), then evaluate; the final JSON line.

    ``callbacks`` run after the monitors and the trackers of ``cfg.trackers`` (which also receive the
    config and the final evaluation). An interrupted run returns the loop's result
    (``interrupted: True``) and is not evaluated.
    """
    run = loop.setup(cfg)
    trackers = Trackers.from_config(cfg) if dist.is_main() else Trackers([], run.out)
    try:
        trackers.log_config(config.to_dict(cfg))
        result = _train_and_evaluate(run, resume, [TrackerCallback(trackers), *callbacks])
        if isinstance(result.get("eval"), dict):
            trackers.log_summary(result["eval"], result["steps"])
    finally:
        trackers.close()
    return result


def _train_and_evaluate(run: loop.Run, resume: bool, callbacks: Sequence[Callback]) -> dict[str, Any]:
    cfg = run.cfg
    labels = getattr(run.images, "labels", None)
    watched = evaluation_data(run.data, cfg, run.device) if cfg.knn_every and not config.is_text(cfg) else run.data
    monitors = Monitors(cfg, run.model.feature_dim, watched, labels, run.device, run.precision, log.warn)
    result = loop.train(run, resume, [monitors, *callbacks])
    if result.get("interrupted"):
        return result
    data = run.data
    if cfg.eval and dist.is_main() and config.is_text(cfg):
        from fastclr.text.data import TextSplits
        from fastclr.text.sts import evaluate_text

        log.info("evaluating: STS-B and/or kNN and linear probe, trained encoder and its starting weights")
        torch.manual_seed(cfg.seed)  # the starting weights: the file's, or the run's own random draw
        start = build_model(cfg).to(run.device)
        result["eval"] = evaluate_text(run.model, start, cast(TextSplits, data), cfg, run.device, run.precision)
    elif cfg.eval and dist.is_main() and data.train is not None and data.test is not None:
        scored = watched if cfg.knn_every else evaluation_data(data, cfg, run.device)
        train, test = scored.train, scored.test
        assert isinstance(train, ImageSet) and isinstance(test, ImageSet)  # eval_splits decoded both
        log.info(
            f"evaluating on {len(train)} train / {len(test)} test images: kNN and linear probe, "
            "SimCLR encoder and random-init baseline"
        )
        settings = FeatureSettings(cfg.image_size, run.device, cfg.eval_batch_size, run.precision, cfg.channels_last)
        with all_threads():  # the other ranks have left: under torchrun (OMP_NUM_THREADS=1) take every core
            result["eval"] = against_random_init(
                run.model,
                lambda: random_init_like(cfg, run.device),
                train,
                test,
                settings,
                knn_k=cfg.knn_k,
                knn_temperature=cfg.knn_temperature,
                seed=cfg.seed,
            )
        result["eval"]["train_images"] = len(train)  # at most eval_max_images, class-balanced
        result["eval"]["test_images"] = len(test)
    if dist.is_main():
        (run.out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def evaluation_data(data: DataSplits, cfg: config.Config, device: torch.device) -> DataSplits:
    """The labelled splits the evaluation scores: at most ``eval_max_images`` train images (seeded,
    class-balanced), both as evaluation views at the training size, decoded by the loader workers
    (``data/evalset.py``) into memory, or a scratch memory-mapped file past the memory budget."""
    limit = tiers.budget(cfg.data_memory_gb, device)
    return evalset.eval_splits(
        data, cfg.image_size, max_images=cfg.eval_max_images, seed=cfg.seed, workers=cfg.workers, limit=limit
    )


def resolve_config(preset: str | None, flags: dict[str, Any], sets: list[str], resume: bool = True) -> config.Config:
    """The run's config: ``preset`` (a name or YAML file), then ``flags``, then ``--set`` values.

    Resuming a run (``--out`` holds checkpoints and config.yaml, no preset named) starts from the run's
    own config.yaml, so ``fastclr pretrain --out DIR`` continues a stopped run as it was started.
    Without ``--out``, the run goes to ``runs/PRESET``.
    """
    out = flags.get("out")
    base = preset
    if base is None and out and resume:
        saved = Path(out) / "config.yaml"
        if checkpoint.existing(Path(out) / "checkpoints") and saved.is_file():
            base = str(saved)  # resuming: the run's own settings, flags on top
    cfg = config.build_config(base, flags, sets, from_data=True)
    if out is None and not any(s.startswith("out=") for s in sets):
        cfg.out = str(Path("runs") / Path(preset or "digits").stem)  # one folder per preset
    return cfg


def run(
    preset: str | None,
    flags: dict[str, Any],
    sets: list[str],
    resume: bool = True,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """``fastclr pretrain``: :func:`resolve_config`, then :func:`pretrain_and_evaluate`."""
    return pretrain_and_evaluate(resolve_config(preset, flags, sets, resume), resume, callbacks)


def random_init_like(cfg: config.Config, device: torch.device) -> SimCLR:
    """The baseline: the run's architecture with random weights (seed ``cfg.seed + 1``), on ``device``."""
    torch.manual_seed(cfg.seed + 1)
    baseline = build_model(cfg).to(device)
    if cfg.channels_last:
        baseline = baseline.to(memory_format=torch.channels_last)
    return baseline
