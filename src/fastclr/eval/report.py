"""What a run learned, on one self-contained HTML page (``fastclr report RUN_DIR``).

The page embeds every image as base64 PNG (drawn with matplotlib, the optional ``report`` extra):
the loss, learning-rate and throughput curves of ``metrics.jsonl``; kNN and online-probe accuracy
over time (whatever ``*top1`` keys the monitors wrote); a grid of augmented view pairs; a 2-D map
(PCA or t-SNE) of test-set representations h coloured by label; and nearest-neighbour retrievals
for a few test images. The encoder is rebuilt from ``RUN_DIR/checkpoints/last.pt``; the data
from the spec saved in its config. A part whose input is missing is replaced by a note.
"""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import torch

from fastclr import config
from fastclr.data import datasets, evalset, tiers
from fastclr.errors import UserError
from fastclr.eval.evaluate import FeatureSettings, split_features
from fastclr.method.augment import MEAN, STD, AugmentConfig, augment
from fastclr.method.model import SimCLR
from fastclr.train import tracking
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


# --- curves -----------------------------------------------------------------------------------


def curve_figures(records: list[dict]) -> list[tuple[str, str | None, str]]:
    """(title, base64 PNG or None, note) for loss, learning rate, throughput and accuracy."""
    plt = _pyplot()
    out: list[tuple[str, str | None, str]] = []
    for key, title, ylabel in (
        ("loss", "Contrastive loss", "loss"),
        ("lr", "Learning rate", "lr"),
        ("images_per_s", "Throughput", "images / s"),
    ):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
        if not pts:
            out.append((title, None, f"no '{key}' values in metrics.jsonl"))
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], lw=1.2)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if key == "loss":
            ax.set_title(f"final {pts[-1][1]:.4f} at step {pts[-1][0]}", fontsize=9)
        out.append((title, _png(fig), ""))
    acc_keys = sorted({k for r in records for k, v in r.items() if "top1" in k and isinstance(v, (int, float))})
    if not acc_keys:
        out.append(
            (
                "Accuracy during training",
                None,
                "no kNN or online-probe lines (knn_top1, online_probe_top1) in metrics.jsonl: the monitors were off",
            )
        )
        return out
    fig, ax = plt.subplots(figsize=(6, 3))
    for key in acc_keys:
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and "step" in r]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, lw=1.2, label=key)
    ax.set_xlabel("step")
    ax.set_ylabel("top-1 accuracy")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.append(("Accuracy during training", _png(fig), ""))
    return out


# --- images -----------------------------------------------------------------------------------


def view_pairs_figure(images: torch.Tensor, cfg: config.Config, count: int = 8, epoch: int = 0):
    """Two augmented views of ``count`` images, as training draws them at ``epoch``: one pair per column."""
    plt = _pyplot()
    count = min(count, images.shape[0])
    index = torch.linspace(0, images.shape[0] - 1, count).round().long()
    aug = augment_config(cfg)
    if not isinstance(aug, AugmentConfig):
        raise UserError(f"data {cfg.data!r}: view pairs are drawn for images only")
    views = [augment(images[index], index, seed=cfg.seed, epoch=epoch, view=v, cfg=aug) for v in range(2)]
    fig, axes = plt.subplots(3, count, figsize=(1.3 * count, 4.2), squeeze=False)
    for j in range(count):
        for row, (img, label) in enumerate(
            ((images[index[j]], "image"), (views[0][j], "view 1"), (views[1][j], "view 2"))
        ):
            ax = axes[row][j]
            ax.imshow(_show(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    fig.suptitle(f"augmented view pairs (seed {cfg.seed}, epoch {epoch})", fontsize=10)
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


# --- the page ---------------------------------------------------------------------------------


def _section(title: str, png: str | None, note: str = "") -> str:
    body = f'<img alt="{html.escape(title)}" src="data:image/png;base64,{png}">' if png else ""
    note_html = f'<p class="note">{html.escape(note)}</p>' if note else ""
    return f"<section><h2>{html.escape(title)}</h2>{body}{note_html}</section>"


def build(
    run_dir: str | Path, out: str | Path | None = None, method: str = "pca", queries: int = 5, device: str = "cpu"
) -> dict:
    """Write the report of ``run_dir`` to ``out`` (default RUN_DIR/report.html); returns {"out": path, ...}."""
    run = _run_folder(run_dir, method)
    _pyplot()
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
    _write_page(target, run, _summary(run, cfg, step, len(records)), notes, sections)
    if cfg is not None:
        _to_trackers(cfg, run, target)
    return {"out": str(target), "sections": len(sections), "step": step}


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
        from fastclr.train.restore import load_model

        restored = load_model(ckpt, device)
        return restored.model.eval(), restored.cfg, restored.state.get("step")
    if (run / "config.yaml").is_file():
        notes.append(f"no checkpoint in {run / 'checkpoints'}: no map or retrievals")
        return None, config.build_config(str(run / "config.yaml"), {}, []), None
    return None, None, None


def _evaluation_data(cfg: config.Config, notes: list[str]) -> datasets.DataSplits | None:
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
    data: datasets.DataSplits,
    method: str,
    queries: int,
    device: str,
    notes: list[str],
) -> list[str]:
    """The 2-D map of test representations and the nearest-neighbour retrievals; a note instead when the
    labelled splits are not in memory."""
    train, test = data.train, data.test
    if not isinstance(test, datasets.ImageSet) or not isinstance(train, datasets.ImageSet):
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


SUMMARY_FIELDS = ("data", "arch", "batch_size", "epochs", "lr", "temperature", "views", "image_size")


def _summary(run: Path, cfg: config.Config | None, step: int | None, records: int) -> dict:
    """The table at the top of the page: the run, its step, main config fields and result.json."""
    result_path = run / "result.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    summary = {"run": str(run), "step": step, "records": records}
    if cfg is not None:
        summary.update({k: getattr(cfg, k) for k in SUMMARY_FIELDS})
    return {**summary, **result}


def _write_page(target: Path, run: Path, summary: dict, notes: list[str], sections: list[str]) -> None:
    """The HTML page: title, summary table, notes, then the sections."""
    rows = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(json.dumps(v))}</td></tr>" for k, v in summary.items()
    )
    page = _PAGE.format(
        title=html.escape(f"fastclr report: {run.name}"),
        rows=rows,
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
    fig.savefig(target, dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return {"out": str(target), "images": min(count, len(data.pretrain))}


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 24px; color: #222; }}
section {{ display: inline-block; vertical-align: top; margin: 0 24px 24px 0; }}
h1 {{ font-size: 22px; }} h2 {{ font-size: 16px; margin: 8px 0; }}
table {{ border-collapse: collapse; font-size: 13px; margin-bottom: 16px; }}
th, td {{ text-align: left; padding: 2px 10px; border-bottom: 1px solid #eee; }}
.note {{ color: #8a5a00; font-size: 13px; max-width: 520px; }}
img {{ max-width: 100%; }}
</style></head>
<body><h1>{title}</h1>
<table>{rows}</table>
{notes}
{sections}
</body></html>
"""


def run_show_augment(
    preset: str | None, data: str, sets: list[str], out: str | Path, count: int = 8, epoch: int = 0
) -> dict:
    """``fastclr show-augment``: the preset (plus ``--set`` values) whose augmentation to draw, then
    :func:`show_augment`."""
    if not 1 <= count <= 64:
        raise UserError(f"--count {count}: must be 1 to 64")
    cfg = config.build_config(preset, {"data": data}, sets, from_data=True)
    config.validate(cfg)
    return show_augment(cfg.data, out, cfg, count, epoch)
