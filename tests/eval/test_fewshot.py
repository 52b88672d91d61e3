"""Few-shot probe: leave-one-out kNN against a hand-written vote, the CSV's errors, and a run without labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit import brute_force_knn_top1, cli, last_json
from fastclr.errors import UserError
from fastclr.eval import fewshot
from fastclr.eval.knn import topk_accuracy


def reference_loo_top1(f: torch.Tensor, y: torch.Tensor, classes: int, k: int, t: float) -> float:
    """Each row against the bank of every other row, by the hand-written weighted vote."""
    correct = 0.0
    for i in range(len(f)):
        rest = torch.cat([torch.arange(i), torch.arange(i + 1, len(f))])
        correct += brute_force_knn_top1(f[rest], y[rest], f[i : i + 1], y[i : i + 1], classes, k, t)
    return correct / len(f)


@pytest.mark.parametrize("k,chunk", [(1, 1000), (5, 7), (200, 16)])
def test_leave_one_out_matches_the_hand_written_vote(k, chunk):
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    f = torch.randn(4, 8, generator=g)[y] + 1.2 * torch.randn(40, 8, generator=g)
    scores = fewshot.leave_one_out_scores(f, y, 4, k, 0.1, chunk=chunk)
    assert topk_accuracy(scores, y) == pytest.approx(reference_loo_top1(f, y, 4, min(k, 39), 0.1))


def test_leave_one_out_never_lets_an_image_vote_for_itself():
    """Every image alone in its class: without itself, no neighbour shares its label (top-1 0, not 1)."""
    f = torch.randn(6, 5, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6)
    assert topk_accuracy(fewshot.leave_one_out_scores(f, y, 6, 3, 0.1), y) == 0.0


def test_leave_one_out_with_exact_duplicates_keeps_k_other_rows():
    """Identical rows tie with the query itself: k other rows still vote, never the query."""
    f = torch.ones(5, 3)
    y = torch.tensor([0, 0, 1, 1, 1])
    scores = fewshot.leave_one_out_scores(f, y, 2, 2, 0.1)
    assert torch.allclose(scores.sum(1), torch.full((5,), 2 * float(np.exp(10.0))))


# --- the CSV ----------------------------------------------------------------------------------------


def write_images(folder, count: int, shade: int = 0) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        p = folder / f"{shade}_{i}.png"
        Image.fromarray(np.full((10, 14, 3), (shade + 40 * i) % 256, dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_load_reads_relative_and_absolute_paths(tmp_path):
    a, b = write_images(tmp_path / "img", 2, 0), write_images(tmp_path / "img", 3, 100)
    csv = tmp_path / "probe.csv"
    lines = ["path,label", "# a comment", "", "img/0_0.png,cat", f"{a[1]},cat"]
    lines += [f"img/100_{i}.png,dog" for i in range(3)]
    csv.write_text("\n".join(lines) + "\n")
    probe = fewshot.load(csv, 8)
    assert probe.images.shape == (5, 3, 8, 8) and probe.images.dtype == torch.uint8
    assert probe.classes == ["cat", "dog"] and probe.labels.tolist() == [0, 0, 1, 1, 1]
    assert probe.ids[1] == str(a[1]) and probe.ids[2] == str(b[0])


@pytest.mark.parametrize(
    "lines,message",
    [
        (["img/0_0.png,a", "img/0_1.png"], "line 2: no comma"),
        (["img/0_0.png,a", "img/0_1.png,a", "img/nope.png,b", "img/0_0.png,b"], "line 3: no file"),
        (["img/0_0.png,a", "img/0_1.png,a", "broken.png,b", "img/0_0.png,b"], "line 3: "),
        (["img/0_0.png,a", "img/0_1.png,a", "img/0_0.png,b"], "line 3: class 'b' has only this image"),
        (["img/0_0.png,a", "img/0_1.png,a"], "a probe needs two classes"),
        (["path,label"], "names no images"),
    ],
)
def test_bad_csv_is_a_user_error_naming_file_and_line(tmp_path, lines, message):
    write_images(tmp_path / "img", 2)
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    csv = tmp_path / "probe.csv"
    csv.write_text("\n".join(lines) + "\n")
    with pytest.raises(UserError) as e:
        fewshot.load(csv, 8)
    assert str(csv) in str(e.value) and message in str(e.value)
    assert "\n" not in str(e.value)


def test_missing_csv_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        fewshot.load(tmp_path / "absent.csv", 8)


# --- a run on a folder without labels ----------------------------------------------------------------


def test_unlabelled_folder_gets_label_free_figures_and_the_probe(tmp_path):
    """A flat folder of digits: no kNN / linear keys, the label-free ones from a training subset, the probe."""
    from sklearn.datasets import load_digits

    d = load_digits()
    pixels = np.round(d.images[:160] * (255.0 / 16.0)).astype(np.uint8)
    flat = tmp_path / "flat"
    flat.mkdir()
    for i, im in enumerate(pixels):
        Image.fromarray(np.repeat(im[:, :, None], 3, 2)).save(flat / f"{i:03d}.png")
    rows = [f"flat/{i:03d}.png,{d.target[i]}" for i in range(160) if d.target[i] < 3][:24]
    (tmp_path / "probe.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    out = tmp_path / "run"
    sets = ["image_size=8", "precision=fp32", "eval_max_images=100", f"probe_labels={tmp_path / 'probe.csv'}"]
    r = cli("pretrain", "--data", str(flat), "--out", str(out), "--batch-size", "32", "--epochs", "1",
            *(a for s in sets for a in ("--set", s)))  # fmt: skip
    result = last_json(r)
    ev = result["eval"]
    assert "knn_top1" not in ev and "linear_top1" not in ev
    assert ev["label_free_source"] == "train_subset"
    for key in ("label_free", "random_init_label_free"):
        assert set(ev[key]) == {
            "rankme",
            "rankme_fraction",
            "alignment",
            "uniformity",
            "view_agreement",
            "images",
            "dim",
        }
        assert ev[key]["images"] == 100
    assert (
        ev["probe_k"] == 6
        and ev["probe_images"] == 24
        and 0 <= ev["probe_knn_top1"] <= 1
        and 0 <= ev["random_init_probe_knn_top1"] <= 1
    )
    assert "fastclr: label-free, 100 training (no test split) images: RankMe" in r.stderr
    assert "few-shot probe, 24 images of 3 classes, leave-one-out" in r.stderr


def test_k_is_capped_within_the_smallest_class():
    """With k over the whole set, leaving an image out leaves its class outvoted (below chance for featureless
    votes); capped at the smallest class - 1, a perfectly clustered set scores 1 whatever the temperature."""
    y = torch.arange(50) % 5  # 5 classes of 10
    assert fewshot.probe_k(y, 200) == 9 and fewshot.probe_k(y, 3) == 3
    assert fewshot.probe_k(torch.tensor([0, 0, 1, 1, 1]), 200) == 1
    g = torch.Generator().manual_seed(3)
    f = torch.eye(8)[y] + 0.01 * torch.randn(50, 8, generator=g)  # tight, orthogonal clusters
    t = 100.0  # nearly equal vote weights: only the count of neighbours per class decides
    assert topk_accuracy(fewshot.leave_one_out_scores(f, y, 5, fewshot.probe_k(y, 200), t), y) == 1.0
    assert topk_accuracy(fewshot.leave_one_out_scores(f, y, 5, 49, t), y) == 0.0  # the bias the cap removes


def test_class_folders_without_a_test_split_get_a_leave_one_out_knn(tmp_path):
    """Labelled digits in class folders, no test/ split: the run scores leave-one-out kNN over the training images,
    equal to the hand-written vote on the encoder's features of the same files, beside the random-init encoder."""
    from sklearn.datasets import load_digits

    import fastclr

    d = load_digits()
    folder = tmp_path / "digits"
    for i in range(90):
        if d.target[i] < 3:
            (folder / str(d.target[i])).mkdir(parents=True, exist_ok=True)
            im = np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8)
            Image.fromarray(np.repeat(im[:, :, None], 3, 2)).save(folder / str(d.target[i]) / f"{i:03d}.png")
    out = tmp_path / "run"
    sets = ["image_size=8", "precision=fp32", "knn_k=5"]
    r = cli("pretrain", "--data", str(folder), "--out", str(out), "--batch-size", "16", "--epochs", "1",
            *(a for s in sets for a in ("--set", s)))  # fmt: skip
    ev = last_json(r)["eval"]
    files = sorted(folder.rglob("*.png"))
    labels = torch.tensor([int(f.parent.name) for f in files])
    assert "knn_top1" not in ev and "probe_knn_top1" not in ev and ev["train_knn_images"] == len(files)
    assert ev["train_knn_k"] == 5 and "no test split: leave-one-out kNN (k 5)" in r.stderr
    h, _ = fastclr.embed(fastclr.load_encoder(out / "checkpoints" / "last.pt"), [str(f) for f in files])
    want = reference_loo_top1(torch.from_numpy(h), labels, 3, 5, 0.1)
    assert ev["train_knn_top1"] == pytest.approx(want, abs=1e-6)
    assert 0 <= ev["random_init_train_knn_top1"] <= 1
    page = Path(last_json(cli("report", str(out)))["out"]).read_text()
    assert "train-set kNN top-1 (leave-one-out)" in page and f"{100 * ev['train_knn_top1']:.1f}%" in page
