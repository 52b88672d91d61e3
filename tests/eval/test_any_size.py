"""Every command on images larger than the training size: evaluation views decoded by workers, in order."""

import numpy as np
import pytest
import torch
from PIL import Image

from evalkit import cli, last_json, make_checkpoint
from fastclr.data import images
from fastclr.eval import embed
from fastclr.eval.features import extract
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
    root, ckpt, _ = photos
    knn = last_json(cli("knn", "--checkpoint", str(ckpt), "--k", "3"))
    assert 0 <= knn["knn"]["3"] <= 1
    lin = last_json(cli("linear", "--checkpoint", str(ckpt), "--features"))
    assert 0 <= lin["top1"] <= 1
