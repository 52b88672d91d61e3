"""Every command on images larger than the training size: evaluation views decoded by workers, in order."""

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit import brute_force_knn_top1, cli, last_json, make_checkpoint
from fastclr.data import images
from fastclr.eval import embed
from fastclr.eval.features import extract
from fastclr.eval.probe import L2_GRID, linear_probe
from makeimages import pixels


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """train/ and test/ with two classes of 40x30 .. 44x34 images: larger than the training size 16."""
    root = tmp_path_factory.mktemp("photos")
    for split, n in (("train", 9), ("test", 4)):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                seed = i + 100 * (c == "b") + 1000 * (split == "test")
                Image.fromarray(pixels(seed, 30 + i % 5, 40 + i % 5)).save(root / split / c / f"{i:02d}.jpg")
    ckpt, model = make_checkpoint(root / "last.pt", str(root), image_size=16, workers=2)
    return root, ckpt, model.eval()


def _one_by_one(model, files):
    """The reference: each file's centre crop (short side to 16, centre 16x16), embedded alone."""
    rows = [
        extract(model.encode, torch.from_numpy(images.decode(f, 16)[0].copy())[None], 16, torch.device("cpu"))
        for f in files
    ]
    return torch.cat(rows).numpy()


def test_embed_large_images_equals_centre_crops_one_by_one(photos, tmp_path):
    root, ckpt, model = photos
    res = last_json(cli("embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.npy"), "--batch-size", "5"))
    files = sorted((root / "train").rglob("*.jpg"))
    assert res["count"] == len(files) == 18 and res["dim"] == model.feature_dim
    array, ids = embed.read(tmp_path / "e.npy")
    assert ids == [str(f) for f in files]  # dataset order
    np.testing.assert_allclose(array, _one_by_one(model, files), atol=1e-4)


def test_knn_and_linear_features_run_on_large_images(photos):
    """Both commands see the centre crops of the reference: kNN equals the hand-written vote on them, the
    L-BFGS probe the probe fitted on them (same chosen L2, same accuracies)."""
    root, ckpt, model = photos
    ref = {}
    for split in ("train", "test"):
        files = sorted((root / split).rglob("*.jpg"))
        ref[split] = (torch.from_numpy(_one_by_one(model, files)), torch.tensor([f.parent.name == "b" for f in files]))
    knn = last_json(cli("knn", "--checkpoint", str(ckpt), "--k", "1,3"))
    for k in (1, 3):
        want = brute_force_knn_top1(*ref["train"], *ref["test"], num_classes=2, k=k, temperature=0.1)
        assert knn["knn"][str(k)] == pytest.approx(want, abs=1e-6), k
    lin = last_json(cli("linear", "--checkpoint", str(ckpt), "--features"))
    (train_f, train_y), (test_f, test_y) = ref["train"], ref["test"]
    # the penalty is chosen by held-out accuracy, then loss: at the weakest penalties the losses differ by less
    # than the features' rounding, so the choice is checked to be the grid's and the fit at it to be the reference's
    assert lin["l2"] in L2_GRID
    want = linear_probe(train_f, train_y.long(), test_f, test_y.long(), 2, l2_grid=(lin["l2"],), seed=0)
    assert lin["top1"] == pytest.approx(want["top1"], abs=1e-6)
