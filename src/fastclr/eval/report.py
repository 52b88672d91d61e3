"""What a run learned, on one self-contained HTML page (``fastclr report RUN_DIR``).

The page leads with what a user came for: a table of the trained encoder against the random-init
one (kNN, linear and few-shot top-1, and the label-free RankMe, alignment, uniformity and view
agreement of ``result.json``'s ``eval``), then the run itself in readable numbers (the learning rate
as its base value and the peak the schedule set, steps, epochs, wall time, images/s). Below come
the figures, each embedded as base64 PNG (drawn with matplotlib, the optional ``report`` extra):
the loss curve with the label-free figures of ``metrics.jsonl`` beside it (``quality_every``), the
learning-rate and throughput curves, kNN and online-probe accuracy over time (whatever ``*top1``
keys the monitors wrote), a grid of augmented view pairs, a 2-D map (PCA or t-SNE) of test-set
representations h coloured by label, and nearest-neighbour retrievals for a few test images. The
encoder is rebuilt from ``RUN_DIR/checkpoints/last.pt``; the data from the spec saved in its
config. A part whose input is missing is replaced by a note.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import numpy as np
import torch

from fastclr import config
from fastclr.data import datasets, evalset
from fastclr.data.chosen import preset_from_data
from fastclr.data.loaders import tiers
from fastclr.data.sets import DataSplits, ImageSet
from fastclr.errors import UserError
from fastclr.eval.evaluate import FeatureSettings, split_features
from fastclr.method.augment import MEAN, STD, AugmentConfig, augment
from fastclr.method.lars import scaled_lr
from fastclr.method.model import SimCLR
from fastclr.train import preflight, tracking
from fastclr.train.step import augment_config

MAP_POINTS = 1000  # test images on the 2-D map (a seeded subset above this)


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend, or UserError with the install hint."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UserError(
            "this command draws with matplotlib, which is not installed: pip install 'fastclr[report]'"
        ) from None
    return plt


def _png(fig) -> str:
    """A figure as base64 PNG text; the figure is closed."""
    plt = _pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _show(x: torch.Tensor) -> np.ndarray:
    """Normalised float [3, H, W] (or uint8) -> float [H, W, 3] in [0, 1] for imshow."""
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    else:
        x = x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return x.clamp(0, 1).permute(1, 2, 0).cpu().numpy()


# --- numbers as the page shows them -----------------------------------------------------------


def _is_number(v: object) -> TypeGuard[int | float]:
    """Whether ``v`` is an int or a float (a bool is neither here)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_accuracy(key: str) -> bool:
    """Whether a result key holds a top-k accuracy in [0, 1] (shown as a percentage)."""
    return "top1" in key or "top5" in key


def number(value: Any, accuracy: bool = False) -> str:
    """``value`` as the page shows it: an accuracy as a percentage with one decimal, another float with 4
    significant digits (from 1,000 on: whole, with thousands separators), an integer with thousands
    separators, a string bare, a list joined by commas, None as a dash."""
    if value is None:
        return "\u2013"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if accuracy:
            return f"{100 * value:.1f}%"
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(number(v) for v in value)
    if isinstance(value, dict):
        return "; ".join(f"{k} {number(v, is_accuracy(str(k)))}" for k, v in value.items())
    return str(value)


def difference(trained: float, baseline: float, accuracy: bool) -> str:
    """trained - baseline with its sign: percentage points for accuracies, 4 significant digits otherwise."""
    d = trained - baseline
    if accuracy:
        return f"{100 * d:+.1f} pp"
    return ("+" if d >= 0 else "-") + number(abs(d))


def duration(seconds: float) -> str:
    """Seconds as ``12.3 s``, ``4 min 05 s`` or ``2 h 07 min``."""
    if seconds < 60:
        return f"{seconds:.3g} s"
    minutes, s = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:,} h {minutes:02d} min"


# --- the headline: trained against random init ------------------------------------------------

# (row, key within eval or eval.label_free, better when, accuracy); the baseline is the same key of
# random_init_* (image runs) or start_* (text runs: the encoder's starting weights)
HEADLINE_ROWS = (
    ("kNN top-1", "knn_top1", "higher", True),
    ("linear top-1", "linear_top1", "higher", True),
    ("few-shot kNN top-1", "probe_knn_top1", "higher", True),
    ("train-set kNN top-1 (leave-one-out)", "train_knn_top1", "higher", True),
    ("STS-B Spearman", "sts_spearman", "higher", False),
)
LABEL_FREE_ROWS = (
    ("RankMe (effective rank of h)", "rankme", "higher", False),
    ("alignment of positive views (z)", "alignment", "lower", False),
    ("uniformity (z)", "uniformity", "lower", False),
    ("view agreement (h)", "view_agreement", "higher", False),
)
HEADLINE_COLUMNS = ("figure", "trained", "random init", "difference", "better")


@dataclass
class Headline:
    """The headline table's rows (cell texts, in :data:`HEADLINE_COLUMNS` order), each row's verdict
    (whether the trained encoder is on the better side), a caption and the notes."""

    rows: list[tuple[str, ...]] = field(default_factory=list)
    ahead: list[bool | None] = field(default_factory=list)
    caption: str = ""
    notes: list[str] = field(default_factory=list)
    baseline: str = "random init"


def headline(result: dict | None) -> Headline:
    """The headline of ``result.json`` (None: there is none): one row per figure present in its ``eval``."""
    out = Headline()
    ev = result.get("eval") if result else None
    if not isinstance(ev, dict):
        out.notes.append(
            "no evaluation in result.json: the run is unfinished, was interrupted or ran with --set eval=false"
            if result
            else "no result.json: the run has not finished (or was interrupted); no figures against random init"
        )
        return out
    prefix = "start_" if any(str(k).startswith("start_") for k in ev) else "random_init_"
    out.baseline = "starting weights" if prefix == "start_" else "random init"
    for name, key, better, accuracy in HEADLINE_ROWS:
        _headline_row(out, name, ev.get(key), ev.get(prefix + key), better, accuracy)
    free, free_base = _mapping(ev.get("label_free")), _mapping(ev.get(prefix + "label_free"))
    if free is not None:
        for name, key, better, accuracy in LABEL_FREE_ROWS:
            _headline_row(out, name, free.get(key), (free_base or {}).get(key), better, accuracy)
    _headline_notes(out, ev, free)
    return out


def _mapping(value: Any) -> dict | None:
    """``value`` when it is a dict (a result entry such as ``label_free``), else None."""
    return value if isinstance(value, dict) else None


def _headline_row(out: Headline, name: str, trained: Any, base: Any, better: str, accuracy: bool) -> None:
    """Append one row to ``out`` when the trained figure is a number (the baseline may be missing)."""
    if not _is_number(trained):
        return
    has_base = _is_number(base)
    diff = difference(float(trained), float(base), accuracy) if has_base else number(None)
    out.rows.append((name, number(trained, accuracy), number(base if has_base else None, accuracy), diff, better))
    out.ahead.append(None if not has_base or trained == base else (trained > base) == (better == "higher"))


def _headline_notes(out: Headline, ev: dict, free: dict | None) -> None:
    """The caption (the label-free images and dim) and the notes on what a run lacks."""
    if free is not None:
        source = {"test": "the test split", "train_subset": "a seeded subset of the training images"}
        where = source.get(str(ev.get("label_free_source")), "")
        size = f"{number(free.get('images'))} held-aside images" + (f" ({where})" if where else "")
        out.caption = f"Label-free figures: {size}, representations h of dimension {number(free.get('dim'))}."
        if _is_number(free.get("rankme_fraction")):
            out.caption += f" RankMe is {number(free['rankme_fraction'], True)} of that dimension."
    if not any(k in ev for k in ("knn_top1", "linear_top1", "sts_spearman")):
        out.notes.append(
            "no labels in this run's data: no kNN or linear figures "
            "(a few labelled images give a few-shot kNN: --set probe_labels=FILE.csv of path,label)"
        )
    if free is None and out.baseline == "random init":  # a text run is scored against its starting weights
        out.notes.append(
            "no label-free figures (RankMe, alignment, uniformity, view agreement): "
            "this run's result.json is from an older fastclr version"
        )


def headline_html(h: Headline) -> str:
    """The headline as HTML: its table (id ``headline``), caption and notes."""
    columns = [*HEADLINE_COLUMNS[:2], h.baseline, *HEADLINE_COLUMNS[3:]]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = ""
    for cells, ahead in zip(h.rows, h.ahead, strict=True):
        tds = [f"<th>{html.escape(cells[0])}</th>"] + [f"<td>{html.escape(c)}</td>" for c in cells[1:]]
        if ahead is not None:
            tds[3] = f'<td class="{"ahead" if ahead else "behind"}">{html.escape(cells[3])}</td>'
        body += f"<tr>{''.join(tds)}</tr>"
    table = f'<table id="headline"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>' if h.rows else ""
    caption = f'<p class="caption">{html.escape(h.caption)}</p>' if h.caption else ""
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in h.notes)
    title = f"Trained encoder against {h.baseline}"
    return f'<div class="block"><h2>{html.escape(title)}</h2>{table}{caption}{notes}</div>'


# --- curves -----------------------------------------------------------------------------------

QUALITY_KEYS = ("rankme", "alignment", "uniformity", "view_agreement")  # the label-free monitor's lines


def _series(records: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) of every metrics line that holds a number under ``key``."""
    return [(r["step"], r[key]) for r in records if _is_number(r.get(key)) and "step" in r]


def curve_figures(records: list[dict]) -> list[tuple[str, str | None, str]]:
    """(title, base64 PNG or None, note) for the loss, the label-free figures beside it, learning rate,
    throughput and accuracy."""
    out = [
        _line_figure(records, "loss", "Contrastive loss", "loss"),
        quality_figure(records),
        _line_figure(records, "lr", "Learning rate", "lr"),
        _line_figure(records, "images_per_s", "Throughput", "images / s"),
    ]
    return [*out, accuracy_figure(records)]


def _line_figure(records: list[dict], key: str, title: str, ylabel: str) -> tuple[str, str | None, str]:
    """One metric of ``metrics.jsonl`` against the step; a note when no line holds it."""
    pts = _series(records, key)
    if not pts:
        return title, None, f"no {key} values in metrics.jsonl"
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if key == "loss":
        ax.set_title(f"final {number(float(pts[-1][1]))} at step {pts[-1][0]:,}", fontsize=9)
    if key == "lr":
        ax.set_title(f"peak {number(float(max(p[1] for p in pts)))} (largest logged)", fontsize=9)
    return title, _png(fig), ""


def quality_figure(records: list[dict]) -> tuple[str, str | None, str]:
    """The label-free figures the ``quality_every`` monitor wrote: RankMe on its own axis, alignment,
    uniformity and view agreement on the other; a note when the monitor was off."""
    title = "Label-free figures during training"
    series = {k: _series(records, k) for k in QUALITY_KEYS}
    if not any(series.values()):
        return title, None, "label-free monitor off: --set quality_every=N (epochs) draws RankMe and the others here"
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8, 3))
    for ax, keys in ((left, ("rankme",)), (right, QUALITY_KEYS[1:])):
        for key in keys:
            pts = series[key]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, label=key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    left.set_ylabel("RankMe (higher: more spread)")
    right.set_ylabel("alignment, uniformity: lower; agreement: higher", fontsize=8)
    if any(series[k] for k in QUALITY_KEYS[1:]):
        right.legend(fontsize=8)
    fig.tight_layout()
    return title, _png(fig), ""


def accuracy_figure(records: list[dict]) -> tuple[str, str | None, str]:
    """kNN and online-probe accuracy over time (every ``*top1`` key of the monitors); a note without any."""
    title = "Accuracy during training"
    acc_keys = sorted({k for r in records for k, v in r.items() if "top1" in k and _is_number(v)})
    if not acc_keys:
        return (
            title,
            None,
            "no kNN or online-probe lines (knn_top1, online_probe_top1) in metrics.jsonl: the monitors were off",
        )
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3))
    for key in acc_keys:
        pts = _series(records, key)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return title, _png(fig), ""


# --- images -----------------------------------------------------------------------------------


# the view-pair grid in inches: a fixed layout, so its PNG's size and every cell's place follow from the count
VIEW_CELL_IN = 1.25  # one image and its margin
VIEW_GAP_IN = 0.125  # between neighbouring images
VIEW_LEFT_IN = 0.5  # room for the row labels
VIEW_TOP_IN = 0.5  # room for the title


def view_pairs_size(count: int) -> tuple[float, float]:
    """(width, height) in inches of the view-pair grid of ``count`` images (3 rows: image, view 1, view 2)."""
    return VIEW_LEFT_IN + count * VIEW_CELL_IN, VIEW_TOP_IN + 3 * VIEW_CELL_IN


def view_pairs_cell(row: int, col: int) -> tuple[float, float, float]:
    """(left, top, side) in inches from the figure's top-left corner of the image at ``row``, ``col``."""
    half = VIEW_GAP_IN / 2
    return VIEW_LEFT_IN + col * VIEW_CELL_IN + half, VIEW_TOP_IN + row * VIEW_CELL_IN + half, VIEW_CELL_IN - VIEW_GAP_IN


def view_pairs_figure(images: torch.Tensor, cfg: config.Config, count: int = 8, epoch: int = 0):
    """Two augmented views of ``count`` images, as training draws them at ``epoch``: one pair per column,
    laid out by :func:`view_pairs_cell`."""
    plt = _pyplot()
    count = min(count, images.shape[0])
    index = torch.linspace(0, images.shape[0] - 1, count).round().long()
    aug = augment_config(cfg)
    if not isinstance(aug, AugmentConfig):
        raise UserError(f"data {cfg.data!r}: view pairs are drawn for images only")
    views = [augment(images[index], index, seed=cfg.seed, epoch=epoch, view=v, cfg=aug) for v in range(2)]
    width, height = view_pairs_size(count)
    fig = plt.figure(figsize=(width, height))
    for j in range(count):
        for row, (img, label) in enumerate(
            ((images[index[j]], "image"), (views[0][j], "view 1"), (views[1][j], "view 2"))
        ):
            left, top, side = view_pairs_cell(row, j)
            ax = fig.add_axes((left / width, 1 - (top + side) / height, side / width, side / height))
            ax.imshow(_show(img), interpolation="nearest", aspect="auto")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    key = f"seed {cfg.seed}, epoch {epoch}"
    title = f"augmented view pairs ({key})" if count >= 3 else f"augmented view pairs\n{key}"  # fits the width
    fig.suptitle(title, fontsize=10, y=1 - 0.06 / height, va="top")
    return fig


def embedding_figure(h: torch.Tensor, labels: torch.Tensor | None, classes: list[str] | None, method: str = "pca"):
    """A 2-D map of representations h [N, d] (PCA or t-SNE), points coloured by label."""
    plt = _pyplot()
    x = torch.nn.functional.normalize(h.float(), dim=1)
    if method == "tsne":
        from sklearn.manifold import TSNE

        xy = torch.from_numpy(
            TSNE(
                n_components=2, init="pca", random_state=0, perplexity=min(30.0, max(5.0, (len(x) - 1) / 4))
            ).fit_transform(x.numpy())
        )
    else:
        x = x - x.mean(0)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        xy = x @ v[:2].T
    points = xy.numpy()
    fig, ax = plt.subplots(figsize=(6, 5))
    if labels is None:
        ax.scatter(points[:, 0], points[:, 1], s=6, alpha=0.7)
    else:
        cmap = plt.get_cmap("tab10" if int(labels.max()) < 10 else "tab20")
        for c in labels.unique().tolist():
            m = (labels == c).numpy()
            name = classes[c] if classes and c < len(classes) else str(c)
            ax.scatter(points[m, 0], points[m, 1], s=6, alpha=0.7, color=cmap(c % cmap.N), label=name)
        ax.legend(fontsize=7, markerscale=2, loc="best", ncol=2)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{method.upper()} of {len(points)} test representations h", fontsize=10)
    return fig


def retrieval_figure(query_img, query_h, query_y, bank_img, bank_h, bank_y, classes, k: int = 5):
    """Each query (a row) with its k nearest bank images by cosine similarity of h; green: same label."""
    plt = _pyplot()
    sim = torch.nn.functional.normalize(query_h, dim=1) @ torch.nn.functional.normalize(bank_h, dim=1).T  # [Q, N]
    top = sim.topk(k, dim=1)
    q = query_img.shape[0]
    fig, axes = plt.subplots(q, k + 1, figsize=(1.3 * (k + 1), 1.45 * q), squeeze=False)

    def name(y):
        return "?" if y is None else classes[int(y)] if classes and int(y) < len(classes) else str(int(y))

    for i in range(q):
        axes[i][0].imshow(_show(query_img[i]), interpolation="nearest")
        axes[i][0].set_title(f"query: {name(None if query_y is None else query_y[i])}", fontsize=8)
        for j in range(k):
            n = int(top.indices[i, j])
            ax = axes[i][j + 1]
            ax.imshow(_show(bank_img[n]), interpolation="nearest")
            same = query_y is not None and bank_y is not None and int(bank_y[n]) == int(query_y[i])
            ax.set_title(
                f"{name(None if bank_y is None else bank_y[n])} {float(top.values[i, j]):.2f}",
                fontsize=8,
                color="green" if same else "red",
            )
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle("nearest neighbours in the train split (cosine of h)", fontsize=10)
    return fig


def _queries(labels: torch.Tensor | None, n: int, count: int) -> torch.Tensor:
    """One test image per class (the first of each), up to ``count``; the first ``count`` without labels."""
    if labels is None:
        return torch.arange(min(count, n))
    first = [int(torch.nonzero(labels == c)[0]) for c in labels.unique().tolist()]
    return torch.tensor(first[:count])


# --- the run summary --------------------------------------------------------------------------

SUMMARY_FIELDS = ("data", "arch", "image_size", "views", "batch_size", "temperature")
_SHOWN = {"out", "eval", "epochs", "steps", "final_loss", "images_per_s", "train_images_per_s", "wall_s"}
_LABELS = {
    "skipped": "undecodable files skipped",
    "train_images": "evaluation train images",
    "test_images": "evaluation test images",
    "probe_images": "few-shot probe images",
    "train_knn_images": "train-set kNN images (leave-one-out)",
    "label_free_source": "label-free images from",
    "batch_size": "batch size",
    "linear_top5": "linear top-5",
    "linear_l2": "linear probe L2 penalty (chosen)",
    "image_size": "image size",
}


def learning_rate(cfg: config.Config | None, records: list[dict]) -> str:
    """The base learning rate and the peak the schedule set (``scaled_lr``, as the training loop computes
    it), with the largest logged value where the logged lines fall short of that peak."""
    logged = [float(r["lr"]) for r in records if _is_number(r.get("lr"))]
    top = max(logged) if logged else None
    if cfg is None:
        return number(None) if top is None else f"peak {number(top)} (the largest in metrics.jsonl)"
    peak = scaled_lr(cfg.lr, cfg.batch_size, cfg.lr_rule)
    rule = {"linear": "lr \u00d7 B/256", "sqrt": "lr \u00d7 \u221aB", "none": "no batch scaling"}.get(cfg.lr_rule, "")
    text = f"{number(cfg.lr)} base, peak {number(peak)} ({cfg.lr_rule} rule: {rule}, B = {cfg.batch_size:,})"
    if top is not None and top < peak * (1 - 1e-6):  # stopped in the warm-up, or the peak's step was not logged
        every = "step" if cfg.log_every == 1 else f"{cfg.log_every:,} steps"
        text += f"; the largest in metrics.jsonl (a line every {every}) is {number(top)}"
    return text


def _wall_time(result: dict, cfg: config.Config | None) -> str | None:
    """The training's wall time: ``wall_s`` when the result holds it, else steps x batch / images/s (approximate)."""
    if _is_number(result.get("wall_s")):
        return duration(float(result["wall_s"]))
    steps, ips = result.get("steps"), result.get("images_per_s")
    if cfg is None or not _is_number(steps) or not _is_number(ips) or ips <= 0:
        return None
    return f"\u2248 {duration(steps * cfg.batch_size / ips)} (steps \u00d7 batch size / images/s)"


def summary_rows(
    run: Path, cfg: config.Config | None, step: int | None, records: list[dict], result: dict
) -> list[tuple[str, str]]:
    """The run table: (label, value as read) for the run, its config, the training result and the rest of
    ``result.json`` (what the headline does not show); no quoted strings, no raw JSON."""
    rows = [("run", str(run))]
    if cfg is not None:
        rows += [(_LABELS.get(k, k), number(getattr(cfg, k))) for k in SUMMARY_FIELDS]
    rows.append(("learning rate", learning_rate(cfg, records)))
    if _is_number(result.get("steps")):
        rows.append(("steps", number(result["steps"])))
    if _is_number(result.get("epochs")):
        planned = f" of {cfg.epochs:,}" if cfg is not None else ""
        rows.append(("epochs", number(float(result["epochs"])) + planned))
    wall = _wall_time(result, cfg)
    if wall:
        rows.append(("wall time (training)", wall))
    if _is_number(result.get("images_per_s")):
        ips = f"{number(float(result['images_per_s']))} end to end"
        if _is_number(result.get("train_images_per_s")):
            ips += f", {number(float(result['train_images_per_s']))} in the training steps alone"
        rows.append(("images/s", ips))
    if _is_number(result.get("final_loss")):
        rows.append(("final loss", number(float(result["final_loss"]))))
    rows += [("checkpoint step", number(step)), ("metrics lines", number(len(records)))]
    rows += [(_LABELS.get(k, k.replace("_", " ")), number(v, is_accuracy(k))) for k, v in _rest(result)]
    return rows


def _rest(result: dict) -> list[tuple[str, Any]]:
    """The keys of ``result`` (and of its ``eval``) that neither the headline nor the summary's own rows show."""
    rest = [(k, v) for k, v in result.items() if k not in _SHOWN]
    ev = result.get("eval")
    if not isinstance(ev, dict):
        return rest
    figures = {key for _, key, _, _ in HEADLINE_ROWS}
    shown = figures | {p + k for p in ("random_init_", "start_") for k in figures}
    free_figures = {key for _, key, _, _ in LABEL_FREE_ROWS} | {"images", "dim"}
    for k, v in ev.items():
        if isinstance(v, dict):  # label_free and its baseline: what the headline and its caption leave out
            hidden = free_figures | {"rankme_fraction"} if k == "label_free" else free_figures
            whose = k.removesuffix("label_free").rstrip("_")  # "", random_init or start
            rest += [(f"{whose} label-free {f}".strip(), x) for f, x in v.items() if f not in hidden]
        elif k not in shown:
            rest.append((k, v))
    return rest


# --- the page ---------------------------------------------------------------------------------


def _section(title: str, png: str | None, note: str = "") -> str:
    """One figure of the page: its title, the embedded PNG (when drawn) and the note (when there is one)."""
    body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">' if png else ""
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{body}{note_html}</section>"


def build(
    run_dir: str | Path, out: str | Path | None = None, method: str = "pca", queries: int = 5, device: str = "cpu"
) -> dict:
    """``fastclr report``: write the report of ``run_dir`` to ``out`` (default RUN_DIR/report.html).

    One self-contained page (images embedded, opens offline): loss, learning-rate and throughput curves,
    kNN / online-probe accuracy over time, augmented view pairs, a 2-D map of test representations
    (``method``: pca or tsne) and nearest-neighbour retrievals. Needs matplotlib: pip install
    'fastclr[report]'. Returns {"out": path, ...}.
    """
    run = _run_folder(run_dir, method)
    _pyplot()
    result = _result(run)
    records = tracking.read(run / tracking.FILE)
    sections = [_section(title, png, note) for title, png, note in curve_figures(records)]
    notes: list[str] = []
    model, cfg, step = _restore(run, device, notes)
    data = _evaluation_data(cfg, notes) if cfg is not None else None
    if data is not None and cfg is not None:
        shown = evalset.head(data.pretrain, 8, cfg.image_size)
        sections.append(_section("Augmented view pairs", _png(view_pairs_figure(shown.images, cfg))))
        if model is not None:
            sections += _representation_sections(model, cfg, data, method, queries, device, notes)
    target = Path(out) if out else run / "report.html"
    _write_page(target, run, headline(result), summary_rows(run, cfg, step, records, result or {}), notes, sections)
    if cfg is not None:
        _to_trackers(cfg, run, target)
    return {"out": str(target), "sections": len(sections), "step": step}


def _result(run: Path) -> dict | None:
    """``RUN_DIR/result.json`` (None when there is none); UserError when it is not a JSON object."""
    path = run / "result.json"
    if not path.is_file():
        return None
    try:
        result = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"{path}: not JSON ({e}); delete it or rerun the evaluation") from None
    if not isinstance(result, dict):
        raise UserError(f"{path}: not a JSON object; delete it or rerun the evaluation")
    return result


def _run_folder(run_dir: str | Path, method: str) -> Path:
    """``run_dir`` as a Path; UserError unless it is a run that has taken a step and ``method`` is a known map."""
    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"RUN_DIR {run}: no such folder; pass the --out folder of a fastclr pretrain run")
    if not (run / tracking.FILE).is_file():
        raise UserError(
            f"RUN_DIR {run}: no {tracking.FILE}; pass the --out folder of a fastclr pretrain run that has taken a step"
        )
    if method not in ("pca", "tsne"):
        raise UserError(f"--map {method}: must be pca or tsne")
    return run


def _restore(run: Path, device: str, notes: list[str]) -> tuple[SimCLR | None, config.Config | None, int | None]:
    """(encoder in eval mode, config, step) of the run's last checkpoint; without one, (None, the run's
    config.yaml or None, None) and a note."""
    ckpt = run / "checkpoints" / "last.pt"
    if ckpt.is_file():
        from fastclr.train.restore import open_checkpoint

        restored = open_checkpoint(ckpt, device)
        return restored.model.eval(), restored.cfg, restored.state.get("step")
    if (run / "config.yaml").is_file():
        notes.append(f"no checkpoint in {run / 'checkpoints'}: no map or retrievals")
        return None, config.build_config(str(run / "config.yaml"), {}, []), None
    return None, None, None


def _evaluation_data(cfg: config.Config, notes: list[str]) -> DataSplits | None:
    """The run's data as evaluation views (at most ``eval_max_images``); None and a note when it cannot be loaded."""
    try:
        return evalset.eval_splits(
            datasets.load(cfg.data, cfg.image_size, workers=cfg.workers),
            cfg.image_size,
            max_images=cfg.eval_max_images,
            seed=cfg.seed,
            workers=cfg.workers,
            limit=tiers.budget(cfg.data_memory_gb),
        )
    except UserError as e:
        notes.append(f"data {cfg.data!r} could not be loaded ({e}): no view pairs, map or retrievals")
        return None


def _representation_sections(
    model: SimCLR,
    cfg: config.Config,
    data: DataSplits,
    method: str,
    queries: int,
    device: str,
    notes: list[str],
) -> list[str]:
    """The 2-D map of test representations and the nearest-neighbour retrievals; a note instead when the
    labelled splits are not in memory."""
    train, test = data.train, data.test
    if not isinstance(test, ImageSet) or not isinstance(train, ImageSet):
        notes.append(f"data {cfg.data!r} has no labelled train and test splits in memory: no map or retrievals")
        return []
    if len(test) > MAP_POINTS:
        test = test.subset(
            torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[:MAP_POINTS].sort().values
        )
    settings = FeatureSettings(cfg.image_size, torch.device(device), cfg.eval_batch_size)
    train_h, test_h = (f.cpu() for f in split_features(model.encode, train, test, settings))
    embedding = _png(embedding_figure(test_h, test.labels, test.classes, method))
    q = _queries(test.labels, len(test), queries)
    query_y = None if test.labels is None else test.labels[q]
    fig = retrieval_figure(test.images[q], test_h[q], query_y, train.images, train_h, train.labels, train.classes)
    return [
        _section(f"Test representations ({method.upper()})", embedding),
        _section("Nearest-neighbour retrievals", _png(fig)),
    ]


def _write_page(
    target: Path, run: Path, top: Headline, rows: list[tuple[str, str]], notes: list[str], sections: list[str]
) -> None:
    """The HTML page: title, the headline, the run table and notes, then the sections."""
    cells = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    page = _PAGE.format(
        title=html.escape(f"fastclr report: {run.name}"),
        headline=headline_html(top),
        rows=cells,
        notes="".join(f'<p class="note">{html.escape(n)}</p>' for n in notes),
        sections="\n".join(sections),
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(page)


def _to_trackers(cfg: config.Config, run: Path, page: Path) -> None:
    """The page (its figures embedded) as a file of the run's W&B / MLflow run (ids in RUN/trackers.json)."""
    import dataclasses

    names = [n for n in tracking.parse_names(cfg.trackers) if n != "tensorboard"]
    if names and (run / tracking.IDS_FILE).is_file():
        trackers = tracking.Trackers.from_config(dataclasses.replace(cfg, out=str(run), trackers=",".join(names)))
        trackers.log_file(page)
        trackers.close()


SHOW_AUGMENT_DPI = 100


def show_augment(spec: str, out: str | Path, cfg: config.Config, count: int = 8, epoch: int = 0) -> dict:
    """Draw view pairs of ``count`` images of ``spec`` to a PNG file (the augmentation ``cfg`` sets)."""
    target = Path(out)
    if target.suffix.lower() != ".png":
        raise UserError(f"--out {target}: must end in .png")
    _pyplot()
    data = datasets.load(spec, cfg.image_size, workers=cfg.workers)
    shown = evalset.head(data.pretrain, count, cfg.image_size)  # large images: their evaluation views at S
    fig = view_pairs_figure(shown.images, cfg, count, epoch)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=SHOW_AUGMENT_DPI)  # no tight box: the size follows from the count (view_pairs_size)
    _pyplot().close(fig)
    return {"out": str(target), "images": min(count, len(data.pretrain))}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
section {{ display: inline-block; vertical-align: top; margin: 0 24px 24px 0; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 16px; margin: 8px 0; }}
table {{ border-collapse: collapse; font-size: 13px; margin-bottom: 8px; }}
th, td {{ text-align: left; padding: 2px 10px; border-bottom: 1px solid #eee; }}
#headline {{ font-size: 15px; }} #headline td {{ text-align: right; font-variant-numeric: tabular-nums; }}
#headline thead th {{ border-bottom: 2px solid #ccc; }} #headline td:last-child {{ text-align: left; color: #666; }}
.ahead {{ color: #1a7f37; }} .behind {{ color: #b42318; }}
.block {{ margin-bottom: 20px; }} .caption {{ font-size: 13px; color: #555; max-width: 720px; }}
.note {{ color: #8a5a00; font-size: 13px; max-width: 520px; }}
img {{ max-width: 100%; }}
</style></head>
<body><h1>{title}</h1>
{headline}
<div class="block"><h2>Run</h2><table id="summary">{rows}</table></div>
{notes}
{sections}
</body></html>
"""


def run_show_augment(
    preset: str | None, data: str, sets: list[str], out: str | Path, count: int = 8, epoch: int = 0
) -> dict:
    """``fastclr show-augment``: draw each of ``count`` images with two of its augmented views, exactly as
    pretraining draws them (:func:`show_augment`), with the preset (plus ``--set`` values) you will train
    with; no preset: the one pretraining would choose for ``data``."""
    if not 1 <= count <= 64:
        raise UserError(f"--count {count}: must be 1 to 64")
    from_data = preset_from_data(config.given({"data": data}, sets)) if preset is None else None
    cfg = config.build_config(preset, {"data": data}, sets, base=from_data)
    preflight.settings(cfg)
    return show_augment(cfg.data, out, cfg, count, epoch)
