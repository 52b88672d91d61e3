"""`fastclr report` on a real run folder and on a constructed one (the headline table, the run summary, the
label-free curves), `fastclr show-augment`, TensorBoard events, and the page in a browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from fastclr import cli, config, pipeline
from fastclr.eval import report
from fastclr.method.schedule import lr_at

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A short real run with the kNN monitor and the online probe on (accuracy lines in metrics.jsonl)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("run")
    sets = [
        "image_size=8",
        "batch_size=32",
        "max_images=256",
        "epochs=3",
        "warmup_epochs=1",
        "eval=false",
        "log_every=2",
        "channels_last=false",
        "precision=fp32",
        "knn_every=1",
        "online_probe=true",
        "knn_k=20",
    ]
    pipeline.pretrain_and_evaluate(config.build_config(None, {"out": str(out)}, sets))
    torch.set_num_threads(threads)
    return out


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_report_is_one_self_contained_page_with_every_plot(run_dir, capsys):
    assert cli.main(["report", str(run_dir)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    page = Path(result["out"]).read_text()
    assert result["out"] == str(run_dir / "report.html")
    for title in (
        "Contrastive loss",
        "Learning rate",
        "Throughput",
        "Accuracy during training",
        "Augmented view pairs",
        "Test representations (PCA)",
        "Nearest-neighbour retrievals",
    ):
        assert f"<h2>{title}</h2>" in page, title
    pngs = _images(page)
    assert len(pngs) == 7 and all(p.startswith(b"\x89PNG") for p in pngs)
    assert not re.search(r'(src|href)="(http|file|/)', page)  # nothing outside the page
    assert "no kNN or online-probe lines" not in page


def test_report_notes_missing_accuracy_lines(run_dir, tmp_path, capsys):
    """A run without monitor lines still gets a page; the accuracy plot becomes a note."""
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    lines = [json.loads(x) for x in (copy / "metrics.jsonl").read_text().splitlines()]
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines if not any("top1" in k for k in r)))
    assert cli.main(["report", str(copy), "--out", str(tmp_path / "r.html"), "--map", "pca"]) == 0
    page = (tmp_path / "r.html").read_text()
    assert "no kNN or online-probe lines" in page and "<h2>Test representations (PCA)</h2>" in page
    assert len(_images(page)) == 6


def _map_png(page: str, method: str) -> bytes:
    m = re.search(
        rf'<h2>Test representations \({method}\)</h2><img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page
    )
    assert m, f"no {method} map on the page"
    return base64.b64decode(m.group(1))


def test_report_map_tsne_draws_scikit_learns_tsne_of_the_test_representations(run_dir, tmp_path, capsys, monkeypatch):
    """--map tsne: the map section is t-SNE's (its title, its own figure, not the PCA one), fitted once on the
    L2-normalised h of every test image (the checkpoint's encoder, recomputed here); an unknown map exits 2."""
    from sklearn import manifold

    import fastclr

    fits = []

    class SpyTSNE(manifold.TSNE):
        def fit_transform(self, X, *args, **kwargs):
            fits.append(np.asarray(X, dtype=np.float64))
            return super().fit_transform(X, *args, **kwargs)

    monkeypatch.setattr(manifold, "TSNE", SpyTSNE)
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "t.html"), "--map", "tsne"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(tmp_path / "t.html")
    page = (tmp_path / "t.html").read_text()
    assert "<h2>Test representations (TSNE)</h2>" in page and "(PCA)" not in page and len(_images(page)) == 7
    assert len(fits) == 1
    h, _ = fastclr.embed(fastclr.load_encoder(run_dir / "checkpoints" / "last.pt"), "digits", split="test")
    h = h / np.linalg.norm(h, axis=1, keepdims=True)
    assert fits[0].shape == h.shape and np.allclose(fits[0], h, atol=1e-5)
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "p.html"), "--map", "pca"]) == 0
    assert _map_png(page, "TSNE") != _map_png((tmp_path / "p.html").read_text(), "PCA")
    assert len(fits) == 1  # PCA does not call t-SNE
    assert cli.main(["report", str(run_dir), "--out", str(tmp_path / "u.html"), "--map", "umap"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--map" in err[0] and "invalid choice: 'umap'" in err[0], err


def test_tensorboard_events_next_to_metrics(run_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = list(run_dir.glob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file next to metrics.jsonl"
    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss", "lr", "images_per_s"} <= tags
    assert any("top1" in t for t in tags)
    losses = [json.loads(x)["loss"] for x in (run_dir / "metrics.jsonl").read_text().splitlines() if '"loss"' in x]
    assert [round(e.value, 4) for e in acc.Scalars("loss")] == [round(v, 4) for v in losses]


def test_show_augment_draws_view_pairs(tmp_path, capsys):
    """The PNG is the 3 x count grid of the fixed layout, every cell drawn (not the white page), the
    originals with strokes, and the two views of each image different from each other and from it."""
    from PIL import Image

    out = tmp_path / "views.png"
    count = 4
    assert cli.main(["show-augment", "--data", "digits", "--out", str(out), "--count", str(count)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)
    with Image.open(out) as im:
        assert im.format == "PNG"
        pixels = np.asarray(im.convert("L"), dtype=np.float64)
    dpi = report.SHOW_AUGMENT_DPI
    width, height = report.view_pairs_size(count)
    assert pixels.shape == (round(height * dpi), round(width * dpi))
    cells = {}
    for row in range(3):
        for col in range(count):
            left, top, side = (round(v * dpi) for v in report.view_pairs_cell(row, col))
            cells[row, col] = pixels[top + 3 : top + side - 3, left + 3 : left + side - 3]  # inside the frame
    for (row, col), cell in cells.items():
        assert cell.size > 0 and cell.mean() < 250, f"cell {row},{col} is blank"
        if row == 0:
            assert cell.std() > 10, f"original image {col} is flat"
    for c in range(count):  # crop, colour and blur draws: two views never match each other or the image
        assert np.abs(cells[1, c] - cells[2, c]).max() > 0, f"view 1 equals view 2 in column {c}"
        assert min(np.abs(cells[0, c] - cells[v, c]).max() for v in (1, 2)) > 0, f"a view is image {c} itself"


def _browser() -> str | None:
    return next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)


def test_report_renders_in_headless_chromium(run_dir, tmp_path, capsys):
    browser = _browser()
    if browser is None:
        pytest.skip("no chromium binary on PATH (Debian: apt-get install chromium; .ci/run installs it)")
    assert cli.main(["report", str(run_dir)]) == 0
    capsys.readouterr()
    shot = tmp_path / "report.png"
    cmd = [
        browser,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        f"--screenshot={shot}",
        "--window-size=1280,2400",
        (run_dir / "report.html").as_uri(),
    ]
    subprocess.run(cmd, check=False, capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000, "chromium wrote no screenshot"
    from PIL import Image

    with Image.open(shot) as im:
        assert im.size == (1280, 2400)
        colours = len(im.convert("RGB").resize((320, 600)).getcolors(1 << 16) or [])
    assert colours > 200  # plots, not a blank or error page


# --- a constructed run: the headline, the summary and the label-free curves ------------------------------

STEPS_PER_EPOCH, EPOCHS, BATCH = 4, 2, 64  # 256 images in batches of 64, warm-up over the first epoch
PEAK = 0.6  # lr 0.075 under the sqrt rule at B = 64: 0.075 * sqrt(64)
LABEL_FREE = {
    "rankme": 96.04321,
    "rankme_fraction": 0.18758,
    "alignment": 0.41234,
    "uniformity": -3.1234,
    "view_agreement": 0.6219,
    "images": 1234,
    "dim": 512,
}
RANDOM_LABEL_FREE = {
    "rankme": 48.5,
    "rankme_fraction": 0.0947,
    "alignment": 0.12,
    "uniformity": -0.9,
    "view_agreement": 0.3107,
    "images": 1234,
    "dim": 512,
}
EVAL = {
    "knn_top1": 0.8123,
    "linear_top1": 0.9049,
    "linear_top5": 0.99,
    "linear_l2": 0.0001,
    "random_init_knn_top1": 0.5,
    "random_init_linear_top1": 0.7071,
    "probe_knn_top1": 0.6667,
    "random_init_probe_knn_top1": 0.4,
    "probe_images": 30,
    "label_free": LABEL_FREE,
    "random_init_label_free": RANDOM_LABEL_FREE,
    "label_free_source": "test",
    "train_images": 1797,
    "test_images": 360,
}
RESULT = {
    "out": "runs/x",
    "epochs": 2.0,
    "steps": STEPS_PER_EPOCH * EPOCHS,
    "final_loss": 4.326833724975586,
    "images_per_s": 1234.5678,
    "train_images_per_s": 1500.25,
    "skipped": 0,
    "eval": EVAL,
}
# row, trained, random init, difference, better: written out by hand from the values above
HEADLINE = [
    ["kNN top-1", "81.2%", "50.0%", "+31.2 pp", "higher"],
    ["linear top-1", "90.5%", "70.7%", "+19.8 pp", "higher"],
    ["few-shot kNN top-1", "66.7%", "40.0%", "+26.7 pp", "higher"],
    ["RankMe (effective rank of h)", "96.04", "48.5", "+47.54", "higher"],
    ["alignment of positive views (z)", "0.4123", "0.12", "+0.2923", "lower"],
    ["uniformity (z)", "-3.123", "-0.9", "-2.223", "lower"],
    ["view agreement (h)", "0.6219", "0.3107", "+0.3112", "higher"],
]


class _Tables(HTMLParser):
    """The text of every cell of the page's tables with an id: {id: [[cell, ...], ...]}, header rows included."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self._table = dict(attrs).get("id")
            if self._table:
                self.tables[self._table] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def _tables(page: str) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(page)
    return parser.tables


def _metrics_lines() -> list[dict]:
    """What the loop writes every step (lr from the schedule itself), and the label-free monitor's lines
    at each epoch's end."""
    total = STEPS_PER_EPOCH * EPOCHS
    lines: list[dict] = []
    for step in range(1, total + 1):
        lr = lr_at(step, PEAK, STEPS_PER_EPOCH, total)
        lines.append({"step": step, "epoch": step / STEPS_PER_EPOCH, "loss": 5.0 - step / 10, "lr": lr})
        lines[-1]["images_per_s"] = 1000.0 + step
        if step % STEPS_PER_EPOCH == 0:
            epoch = step // STEPS_PER_EPOCH
            quality = {"rankme": 40.0 + 20 * epoch, "alignment": 0.2 * epoch, "uniformity": -1.0 * epoch}
            lines.append({"step": step, "epoch": float(epoch), **quality, "view_agreement": 0.3 * epoch})
    return lines


@pytest.fixture(scope="module")
def fake_run(tmp_path_factory):
    """A checkpoint of a 3-step digits run (lr 0.075, sqrt rule, B = 64) under a constructed metrics.jsonl
    (with label-free lines) and result.json (with every headline key)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("fake")
    sets = [
        "image_size=8",
        f"batch_size={BATCH}",
        "max_images=256",
        f"epochs={EPOCHS}",
        "max_steps=3",
        "warmup_epochs=1",
        "eval=false",
        "log_every=1",
        "channels_last=false",
        "precision=fp32",
        "lr=0.075",
        "lr_rule=sqrt",
        "trackers=none",
    ]
    pipeline.pretrain_and_evaluate(config.build_config(None, {"out": str(out)}, sets))
    torch.set_num_threads(threads)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _metrics_lines()))
    (out / "result.json").write_text(json.dumps(RESULT, indent=2))
    return out


@pytest.fixture(scope="module")
def fake_page(fake_run):
    assert report.build(fake_run)["out"] == str(fake_run / "report.html")
    return (fake_run / "report.html").read_text()


def test_headline_table_puts_trained_against_random_init(fake_page):
    tables = _tables(fake_page)
    assert fake_page.index('id="headline"') < fake_page.index('id="summary"') < fake_page.index("<section>")
    assert tables["headline"][0] == ["figure", "trained", "random init", "difference", "better"]
    assert tables["headline"][1:] == HEADLINE
    caption = re.search(r'<p class="caption">(.*?)</p>', fake_page)
    assert caption is not None
    assert "1,234 held-aside images (the test split)" in caption.group(1)
    assert "dimension 512" in caption.group(1) and "18.8%" in caption.group(1)
    assert "no labels" not in fake_page and "older fastclr version" not in fake_page


def test_summary_reads_as_numbers_not_json(fake_page):
    rows = dict(_tables(fake_page)["summary"])
    for label, cell in rows.items():
        assert '"' not in cell and "{" not in cell and "[" not in cell, (label, cell)
        assert not re.search(r"\d\.\d{5,}", cell), (label, cell)  # no raw float
    assert "&quot;" not in fake_page.split('id="summary"')[1].split("</table>")[0]
    assert '"knn_top1"' not in fake_page and "knn_top1&quot;" not in fake_page  # no JSON blob anywhere
    assert rows["final loss"] == "4.327"
    assert rows["steps"] == "8" and rows["epochs"] == "2 of 2"
    assert rows["images/s"] == "1,235 end to end, 1,500 in the training steps alone"
    assert rows["wall time (training)"].startswith("\u2248 0.415 s")  # 8 steps x 64 images / 1234.5678 images/s
    assert rows["linear top-5"] == "99.0%" and rows["evaluation train images"] == "1,797"
    assert rows["few-shot probe images"] == "30" and rows["label-free images from"] == "test"
    assert rows["data"] == "digits" and rows["batch size"] == "64"
    assert rows["random init label-free rankme fraction"] == "0.0947"


def test_summary_shows_the_base_and_the_peak_learning_rate(fake_run, fake_page):
    lr = dict(_tables(fake_page)["summary"])["learning rate"]
    logged = max(r["lr"] for r in _metrics_lines() if "lr" in r)
    assert logged == pytest.approx(PEAK)  # the schedule's lines reach the peak at the end of warm-up
    assert lr.startswith(f"0.075 base, peak {PEAK:g} (sqrt rule")
    assert "the largest in metrics.jsonl" not in lr
    # the run itself stopped after 3 of its 4 warm-up steps: the page says how far its logged lr got
    restored = report._restore(fake_run, "cpu", [])[1]
    assert restored is not None
    early = [{"step": s, "lr": lr_at(s - 1, PEAK, STEPS_PER_EPOCH, 8)} for s in (1, 2, 3)]
    assert report.learning_rate(restored, early) == (
        "0.075 base, peak 0.6 (sqrt rule: lr \u00d7 \u221aB, B = 64); the largest in metrics.jsonl "
        "(a line every step) is 0.3"
    )


def test_label_free_curves_beside_the_loss(fake_run, fake_page, tmp_path):
    titles = re.findall(r"<h2>([^<]*)</h2>", fake_page)
    assert titles.index("Label-free figures during training") == titles.index("Contrastive loss") + 1
    section = fake_page.split("<h2>Label-free figures during training</h2>")[1].split("</section>")[0]
    assert section.startswith("<img") and "quality_every" not in section
    assert len(_images(fake_page)) == 7  # loss, label-free, lr, throughput, view pairs, map, retrievals
    copy = tmp_path / "run"
    shutil.copytree(fake_run, copy)
    lines = [r for r in _metrics_lines() if "rankme" not in r]
    (copy / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    page = Path(report.build(copy)["out"]).read_text()
    section = page.split("<h2>Label-free figures during training</h2>")[1].split("</section>")[0]
    assert "<img" not in section and "label-free monitor off: --set quality_every=N" in section
    assert len(_images(page)) == 6


def test_headline_notes_runs_without_labels_or_label_free_figures():
    unlabelled = {"eval": {"label_free": LABEL_FREE, "random_init_label_free": RANDOM_LABEL_FREE}}
    top = report.headline(unlabelled)
    assert [list(r) for r in top.rows] == HEADLINE[3:]
    assert any(n.startswith("no labels in this run's data") for n in top.notes)
    assert "no labels in this run&#x27;s data" in report.headline_html(top)
    older = {"eval": {k: v for k, v in EVAL.items() if "label_free" not in k and "probe" not in k}}
    top = report.headline(older)
    assert [list(r) for r in top.rows] == HEADLINE[:2]
    assert top.notes == [
        "no label-free figures (RankMe, alignment, uniformity, view agreement): "
        "this run's result.json is from an older fastclr version"
    ]
    assert report.headline(None).rows == [] and "no result.json" in report.headline(None).notes[0]
    no_eval = report.headline({"steps": 3})
    assert no_eval.rows == [] and "no evaluation in result.json" in no_eval.notes[0]
    trained_only = report.headline({"eval": {"knn_top1": 0.25}})
    assert [list(r) for r in trained_only.rows] == [["kNN top-1", "25.0%", "\u2013", "\u2013", "higher"]]


@pytest.mark.parametrize("text", ["{not json", "[1, 2]"])
def test_a_broken_result_json_is_a_one_line_error(tmp_path, text, capsys):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "loss": 5.0}) + "\n")
    (tmp_path / "result.json").write_text(text)
    assert cli.main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "result.json" in err[0] and "delete it or rerun the evaluation" in err[0]


@pytest.mark.parametrize(
    ("value", "accuracy", "shown"),
    [
        (4.326833724975586, False, "4.327"),
        (0.8123, True, "81.2%"),
        (1234567, False, "1,234,567"),
        (12345.6, False, "12,346"),
        (0.000123456, False, "0.0001235"),
        (2.0, False, "2"),
        ("digits", False, "digits"),
        (True, False, "yes"),
        (None, False, "\u2013"),
        ([1, 2.5], False, "1, 2.5"),
    ],
)
def test_numbers_as_the_page_shows_them(value, accuracy, shown):
    assert report.number(value, accuracy) == shown
