"""What a sweep optimises (``--metric``): the figure of a trial's result it reads, which way is better,
and the monitor in metrics.jsonl its pruner reads while the trial trains.

* ``knn_top1``, ``linear_top1`` (maximised): the end-of-run kNN and linear probe on the labelled
  test split; both pruned on the kNN monitor (``knn_every``).
* ``rankme``, ``view_agreement`` (maximised) and ``alignment``, ``uniformity`` (minimised): the
  label-free figures of :mod:`fastclr.eval.quality` (``result["eval"]["label_free"]``), measured on
  held-aside images whether the folder has labels or not; pruned on the label-free monitor
  (``quality_every``), which needs no labels either.
* ``probe_knn`` (maximised): the few-shot leave-one-out kNN on the images ``probe_labels`` names
  (:mod:`fastclr.eval.fewshot`). Nothing measures it during training, so its trials are not pruned.
* ``train_knn`` (maximised): the same leave-one-out kNN over the training images of a labelled folder or
  list without a test split (``eval.train_knn_top1``); not pruned either.

A label-free figure is a proxy: alignment is perfect (0) for a collapsed encoder, and uniformity
rewards spread whatever the classes. benchmarks/README.md ("Tuning without labels") measures how
often each one picks the trial the labelled kNN would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastclr.errors import UserError

MAXIMIZE, MINIMIZE = "maximize", "minimize"


@dataclass(frozen=True)
class Metric:
    """One objective: ``path`` into ``result["eval"]``, its ``direction``, and the pruner's monitor.

    ``monitor`` is the metrics.jsonl key the pruner reads and ``every`` the config field that turns
    that monitor on (None, None: nothing to prune on).
    """

    name: str
    path: tuple[str, ...]
    direction: str
    monitor: str | None
    every: str | None


METRICS = {
    m.name: m
    for m in (
        Metric("knn_top1", ("knn_top1",), MAXIMIZE, "knn_top1", "knn_every"),
        Metric("linear_top1", ("linear_top1",), MAXIMIZE, "knn_top1", "knn_every"),
        Metric("rankme", ("label_free", "rankme"), MAXIMIZE, "rankme", "quality_every"),
        Metric("alignment", ("label_free", "alignment"), MINIMIZE, "alignment", "quality_every"),
        Metric("uniformity", ("label_free", "uniformity"), MINIMIZE, "uniformity", "quality_every"),
        Metric("view_agreement", ("label_free", "view_agreement"), MAXIMIZE, "view_agreement", "quality_every"),
        Metric("probe_knn", ("probe_knn_top1",), MAXIMIZE, None, None),
        Metric("train_knn", ("train_knn_top1",), MAXIMIZE, None, None),
    )
}
# every figure trials.csv carries (column: path into result["eval"]), so that a study can be read against another
FIGURES = {
    "knn_top1": ("knn_top1",),
    "linear_top1": ("linear_top1",),
    "probe_knn": ("probe_knn_top1",),
    "train_knn": ("train_knn_top1",),
    "rankme": ("label_free", "rankme"),
    "alignment": ("label_free", "alignment"),
    "uniformity": ("label_free", "uniformity"),
    "view_agreement": ("label_free", "view_agreement"),
}


HELP = (
    "objective; maximised: knn_top1, linear_top1 (both need a labelled test split), rankme, view_agreement, "
    "probe_knn (few-shot kNN; needs --set probe_labels=FILE), train_knn (leave-one-out kNN over a labelled folder "
    "without a test split); minimised: alignment, uniformity. The label-free ones "
    "(rankme, view_agreement, alignment, uniformity) need no labels but are proxies (benchmarks/README.md: how often "
    "each picks what kNN would); alignment and view_agreement are measured on each trial's own views, so they "
    "favour milder augmentation: do not search color_strength with them"
)


def get(name: str) -> Metric:
    """The metric called ``name``; UserError listing the valid ones otherwise."""
    if name not in METRICS:
        raise UserError(f"--metric {name!r}: use one of {', '.join(METRICS)}")
    return METRICS[name]


def describe(metric: Metric) -> str:
    """``rankme (maximised)``: the metric with its direction, as the outputs name it."""
    return f"{metric.name} ({'maximised' if metric.direction == MAXIMIZE else 'minimised'})"


def _lookup(scores: dict[str, Any], path: tuple[str, ...]) -> float | None:
    value: Any = scores
    for key in path:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def read(metric: Metric, scores: dict[str, Any] | None) -> float | None:
    """The metric's value in a result's ``eval`` entry, or None when the entry lacks it."""
    return _lookup(scores or {}, metric.path)


def figures(scores: dict[str, Any] | None) -> dict[str, float]:
    """Every figure of :data:`FIGURES` that a result's ``eval`` entry holds."""
    found = {name: _lookup(scores or {}, path) for name, path in FIGURES.items()}
    return {name: value for name, value in found.items() if value is not None}


def missing_reason(metric: Metric) -> str:
    """Why a finished trial can lack the metric: what the user should check."""
    if metric.path[0] == "label_free":
        return f"no label_free.{metric.name} in the result (eval=false, a text run, or under 2 held-aside images)"
    if metric.name == "probe_knn":
        return "no probe_knn_top1 in the result (eval=false, or probe_labels unset)"
    if metric.name == "train_knn":
        return "no train_knn_top1 in the result (eval=false, unlabelled data, or data with a test split)"
    return f"no {metric.name} in the result (eval=false, or no labelled test split: try --metric rankme)"
