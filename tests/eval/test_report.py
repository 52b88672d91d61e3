"""`fastclr report` on a real run folder, `fastclr show-augment`, TensorBoard events, and the page in a browser."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from fastclr import cli, config, pipeline

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
    out = tmp_path / "views.png"
    assert cli.main(["show-augment", "--data", "digits", "--out", str(out), "--count", "4"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["out"] == str(out)
    assert out.read_bytes().startswith(b"\x89PNG")


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
