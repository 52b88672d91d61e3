"""Pretrain, then evaluate: what ``fastclr pretrain`` runs.

Training (:mod:`fastclr.train.loop`) knows nothing of evaluation; this layer joins them: it
builds the monitors of :mod:`fastclr.eval.monitor` as loop callbacks, runs the loop, then scores
the encoder with kNN and the linear probe against a random-init encoder of the same
architecture (:func:`fastclr.eval.evaluate.against_random_init`) and writes ``OUT/result.json``.
Every image run, labelled or not, also gets the label-free figures of :mod:`fastclr.eval.quality`
(RankMe, alignment, uniformity, view agreement) of both encoders on held-aside images: the test
split when there is one, else a seeded subset of the training images (``label_free_source``); and,
with ``probe_labels``, the few-shot leave-one-out kNN of :mod:`fastclr.eval.fewshot`.
A text run is scored by :func:`fastclr.eval.sts.evaluate_text` (STS-B Spearman, kNN / probe on
labelled texts) against the encoder at its starting weights.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from fastclr import config, log
from fastclr.data import evalset
from fastclr.data.chosen import preset_from_data
from fastclr.data.loaders import tiers
from fastclr.data.sets import DataSplits, ImageSet
from fastclr.data.subsets import balanced_subset
from fastclr.data.text import TextSplits
from fastclr.eval import fewshot, quality
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
    watched: DataSplits | TextSplits = run.data
    probe: ImageSet | None = None
    held: tuple[ImageSet, str] | None = None
    if isinstance(run.data, DataSplits):  # an image run
        watched = evaluation_data(run.data, cfg, run.device) if cfg.knn_every else run.data
        # checked before training, so that a bad CSV costs seconds, not a whole run
        probe = fewshot.load(cfg.probe_labels, cfg.image_size) if cfg.probe_labels and cfg.eval else None
        held = held_aside(watched, run.images, cfg, run.device) if cfg.quality_every and dist.is_main() else None
    monitors = Monitors(
        cfg, run.model.feature_dim, watched, labels, run.device, run.precision, log.warn, held[0] if held else None
    )
    result = loop.train(run, resume, [monitors, *callbacks])
    if result.get("interrupted"):
        return result
    if cfg.eval and dist.is_main() and isinstance(run.data, TextSplits):
        from fastclr.eval.sts import evaluate_text

        log.info("evaluating: STS-B and/or kNN and linear probe, trained encoder and its starting weights")
        torch.manual_seed(cfg.seed)  # the starting weights: the file's, or the run's own random draw
        start = build_model(cfg).to(run.device)
        result["eval"] = evaluate_text(run.model, start, run.data, cfg, run.device, run.precision)
    elif cfg.eval and dist.is_main() and isinstance(watched, DataSplits):
        with all_threads():  # the other ranks have left: under torchrun (OMP_NUM_THREADS=1) take every core
            result["eval"] = evaluate_images(run, watched, held, probe)
    if dist.is_main():
        (run.out / "result.json").write_text(json.dumps(result, indent=2))
    return result


def evaluate_images(
    run: loop.Run, watched: DataSplits, held: tuple[ImageSet, str] | None, probe: ImageSet | None
) -> dict[str, Any]:
    """The result's ``eval`` entry of an image run: kNN and probe where labelled splits exist, the
    label-free figures always, the few-shot probe with ``probe``, and a leave-one-out kNN over the training
    images when they are labelled without a test split; each beside the random-init encoder's."""
    cfg, data = run.cfg, run.data
    if not isinstance(data, DataSplits):
        raise TypeError("evaluate_images needs an image run")
    settings = FeatureSettings(cfg.image_size, run.device, cfg.eval_batch_size, run.precision, cfg.channels_last)
    scores: dict[str, Any] = {}
    scored = data
    if data.train is not None and data.test is not None:
        scored = watched if cfg.knn_every else evaluation_data(data, cfg, run.device)
        train, test = scored.train, scored.test
        assert isinstance(train, ImageSet) and isinstance(test, ImageSet)  # eval_splits decoded both
        log.info(
            f"evaluating on {len(train)} train / {len(test)} test images: kNN and linear probe, "
            "SimCLR encoder and random-init baseline"
        )
        scores = against_random_init(
            run.model,
            lambda: random_init_like(cfg, run.device),
            train,
            test,
            settings,
            knn_k=cfg.knn_k,
            knn_temperature=cfg.knn_temperature,
            seed=cfg.seed,
        )
        scores["train_images"] = len(train)  # at most eval_max_images, class-balanced
        scores["test_images"] = len(test)
    images, source = held or held_aside(scored, run.images, cfg, run.device)
    scores.update(label_free(run, images, source, settings))
    if probe is not None:
        scores.update(few_shot(run, probe, settings))
    elif data.train is not None and data.test is None:  # class folders, no test split: the held-aside training
        scores.update(train_knn(run, images, settings))  # images the label-free figures used, with their labels
    return scores


def held_aside(data: DataSplits, images: Any, cfg: config.Config, device: torch.device) -> tuple[ImageSet, str]:
    """The images the label-free figures are measured on, and where they come from.

    The test split (``"test"``) when there is one, else the pretraining ``images``
    (``"train_subset"``): at most ``eval_max_images`` of them (seeded; class-balanced when labelled),
    as evaluation views at the training size.
    """
    split, source = (data.test, "test") if data.test is not None else (images, "train_subset")
    picked = balanced_subset(split, cfg.eval_max_images, cfg.seed)
    limit = tiers.budget(cfg.data_memory_gb, device)
    return evalset.decoded(picked, cfg.image_size, workers=cfg.workers, limit=limit), source


def label_free(run: loop.Run, images: ImageSet, source: str, settings: FeatureSettings) -> dict[str, Any]:
    """``label_free`` and ``random_init_label_free`` (:func:`fastclr.eval.quality.measure`), logged.

    Empty (with a warning) under two images: uniformity needs a pair.
    """
    cfg, aug = run.cfg, run.recipe.image  # an image run
    if len(images) < 2:
        log.warn(f"{len(images)} held-aside image: the label-free figures need two or more")
        return {}
    seed = cfg.seed + quality.VIEW_SEED
    ours = quality.measure(run.model, images.images, aug, settings, seed)
    base = quality.measure(random_init_like(cfg, run.device), images.images, aug, settings, seed)
    quality.report(ours, base, source)
    return {"label_free": ours, "random_init_label_free": base, "label_free_source": source}


def leave_one_out(run: loop.Run, images: ImageSet, settings: FeatureSettings) -> tuple[float, float, int]:
    """Leave-one-out weighted kNN top-1 of the trained and of the random-init encoder on labelled ``images``,
    and the k used (:func:`fastclr.eval.fewshot.probe_k`)."""
    cfg = run.cfg
    assert images.labels is not None
    k, t = fewshot.probe_k(images.labels, cfg.knn_k), cfg.knn_temperature
    ours = fewshot.top1(run.model, images, settings, k, t)
    return ours, fewshot.top1(random_init_like(cfg, run.device), images, settings, k, t), k


def train_knn(run: loop.Run, train: ImageSet, settings: FeatureSettings) -> dict[str, Any]:
    """For labelled images without a test split (class folders, a labelled list): leave-one-out kNN over
    ``train``, the training images held aside for the label-free figures (at most ``eval_max_images``,
    class-balanced, as evaluation views). They were seen, without their labels, in pretraining, so the figure
    flatters both encoders alike; a test/ folder gives held-out accuracy."""
    if train.labels is None or train.num_classes < 2:
        return {}
    ours, base, k = leave_one_out(run, train, settings)
    log.info(
        f"no test split: leave-one-out kNN (k {k}) over {len(train)} labelled training images of {train.num_classes} "
        f"classes, seen unlabelled in pretraining: top-1 {ours:.3f} vs {base:.3f} at random init (train/ and test/ "
        "sub-folders give held-out accuracy)"
    )
    return {
        "train_knn_top1": ours,
        "random_init_train_knn_top1": base,
        "train_knn_images": len(train),
        "train_knn_k": k,
    }


def few_shot(run: loop.Run, probe: ImageSet, settings: FeatureSettings) -> dict[str, Any]:
    """Leave-one-out weighted kNN top-1 on the ``probe_labels`` images, trained and random-init encoders."""
    ours, base, k = leave_one_out(run, probe, settings)  # fewshot.load labels every image
    log.info(
        f"few-shot probe, {len(probe)} images of {probe.num_classes} classes, {fewshot.PROTOCOL} weighted kNN "
        f"(k {k}): top-1 {ours:.3f} vs {base:.3f} at random init"
    )
    return {
        "probe_knn_top1": ours,
        "random_init_probe_knn_top1": base,
        "probe_images": len(probe),
        "probe_protocol": fewshot.PROTOCOL,
        "probe_k": k,
    }


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
    from_data = preset_from_data(config.given(flags, sets)) if base is None else None
    cfg = config.build_config(base, flags, sets, base=from_data)
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
