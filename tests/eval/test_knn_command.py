"""`fastclr knn`: the accuracies equal a hand-written weighted vote on the checkpoint's features, at any batch size."""

import pytest
import torch

from evalkit import brute_force_knn_top1, cli, digit_folder, last_json, make_checkpoint
from fastclr.data import datasets
from fastclr.eval.features import extract


def test_knn_matches_a_brute_force_vote_and_is_batch_independent(tmp_path):
    folder = digit_folder(tmp_path / "data", 8, 3)
    ckpt, model = make_checkpoint(tmp_path / "last.pt", str(folder))
    small = last_json(cli("knn", "--checkpoint", str(ckpt), "--k", "1,5", "--batch-size", "3"))
    large = last_json(cli("knn", "--checkpoint", str(ckpt), "--k", "5,1", "--batch-size", "1000"))
    assert small["knn"] == large["knn"] and set(small["knn"]) == {"1", "5"}
    data = datasets.load(str(folder), 8)
    model.eval()
    tr = extract(model.encode, data.train.images, 8, torch.device("cpu"))
    te = extract(model.encode, data.test.images, 8, torch.device("cpu"))
    for k in (1, 5):
        expected = brute_force_knn_top1(tr, data.train.labels, te, data.test.labels, 10, k, 0.1)
        assert small["knn"][str(k)] == pytest.approx(expected, abs=1e-6)


def test_random_init_is_the_same_architecture_reseeded(tmp_path):
    """--random-init evaluates exactly restore.random_init(cfg, seed): the baseline of the protocol."""
    from fastclr import config
    from fastclr.train import restore

    folder = digit_folder(tmp_path / "data", 8, 3)
    ckpt, _ = make_checkpoint(tmp_path / "last.pt", str(folder))
    res = last_json(cli("knn", "--checkpoint", str(ckpt), "--random-init", "--seed", "5", "--k", "3"))
    cfg = config.from_dict(torch.load(ckpt, weights_only=True)["config"])
    model = restore.random_init(cfg, 5).model.eval()
    data = datasets.load(str(folder), 8)
    tr = extract(model.encode, data.train.images, 8, torch.device("cpu"))
    te = extract(model.encode, data.test.images, 8, torch.device("cpu"))
    assert res["encoder"] == "random-init"
    expected = brute_force_knn_top1(tr, data.train.labels, te, data.test.labels, 10, 3, 0.1)
    assert res["knn"]["3"] == pytest.approx(expected, abs=1e-6)
