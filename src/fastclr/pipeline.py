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
from typing import Any, cast

import torch

from fastclr import config, log
from fastclr.eval.evaluate import FeatureSettings, against_random_init
from fastclr.eval.monitor import Monitors
from fastclr.method.model import SimCLR
from fastclr.train import dist, loop
from fastclr.train.callbacks import Callback
from fastclr.train.step import build_model


def pretrain_and_evaluate(
    cfg: config.Config, resume: bool = True, callbacks: Sequence[Callback] = ()
) -> dict[str, Any]:
    """Pretrain as configured (resuming from ``OUT/checkpoints``), then evaluate; the final JSON line.

    ``callbacks`` run after the monitors (trackers, a search's pruner). An interrupted run
    returns the loop's result (``interrupted: True``) and is not evaluated.
    """
    run = loop.setup(cfg)
    labels = getattr(run.images, "labels", None)
    monitors = Monitors(cfg, run.model.feature_dim, run.data, labels, run.device, run.precision, log.warn)
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
        log.info("evaluating: kNN and linear probe, SimCLR encoder and random-init baseline")
        settings = FeatureSettings(cfg.image_size, run.device, cfg.eval_batch_size, run.precision, cfg.channels_last)
        result["eval"] = against_random_init(
            run.model,
            lambda: random_init_like(cfg, run.device),
            data.train,
            data.test,
            settings,
            knn_k=cfg.knn_k,
            knn_temperature=cfg.knn_temperature,
            seed=cfg.seed,
        )
    if dist.is_main():
        (run.out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def random_init_like(cfg: config.Config, device: torch.device) -> SimCLR:
    """The baseline: the run's architecture with random weights (seed ``cfg.seed + 1``), on ``device``."""
    torch.manual_seed(cfg.seed + 1)
    baseline = build_model(cfg).to(device)
    if cfg.channels_last:
        baseline = baseline.to(memory_format=torch.channels_last)
    return baseline
