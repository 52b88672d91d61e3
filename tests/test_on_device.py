"""Every path that turns features into numpy or Python copies them off the device first.

No GPU runs here, so the models' outputs are made to act like CUDA tensors (tests/devicekit.py: a
tensor whose ``.numpy()`` raises as a CUDA tensor's does): any ``.numpy()`` or ``np.asarray`` of a
feature, logit or embedding that did not go through ``.cpu()`` fails these tests, as it would crash
on a GPU. Each command runs in this process, on a checkpoint trained without the stand-in.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import fastclr
from devicekit import MESSAGE, OnDevice, device_outputs
from evalkit import cli, digit_folder, last_json, make_checkpoint, teacher_and_student
from makeimages import pixels


def test_the_stand_in_refuses_numpy_like_a_device_tensor():
    t = torch.arange(6.0).as_subclass(OnDevice)
    for to_numpy in (lambda x: x.numpy(), np.asarray, lambda x: np.concatenate([x, x])):
        with pytest.raises(TypeError, match="cuda"):
            to_numpy(t * 2)  # results of operators stay on the "device"
    assert type(t.cpu()) is torch.Tensor and type(t.to("cpu")) is torch.Tensor
    np.testing.assert_array_equal(t.cpu().numpy(), np.arange(6.0))
    assert float(t.sum()) == 15.0 and t.tolist()[1] == 1.0  # reading values is allowed (a sync, not a crash)
    with device_outputs():
        out = torch.nn.Linear(6, 2)(torch.ones(1, 6))
    assert isinstance(out, OnDevice) and "host memory" in MESSAGE


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("on_device")
    folder = digit_folder(root / "data", 8, 3)
    ckpt, _ = make_checkpoint(root / "run" / "checkpoints" / "last.pt", str(folder))
    return root, folder, ckpt


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Labelled photos larger than the model's side: read from their files (the ``files`` tier)."""
    root = tmp_path_factory.mktemp("photos")
    for split, n in (("train", 6), ("test", 3)):
        for c in range(3):
            folder = root / split / str(c)
            folder.mkdir(parents=True)
            for i in range(n):
                Image.fromarray(pixels(100 * c + 10 * i + n, 40, 34)).save(folder / f"{i}.jpg")
    ckpt, _ = make_checkpoint(root / "last.pt", str(root))
    return root, ckpt


def test_python_embed(digits):
    _, folder, ckpt = digits
    encoder = fastclr.load_encoder(ckpt)
    with device_outputs():
        rows, ids = fastclr.embed(encoder, str(folder), batch_size=7)
        z, _ = fastclr.embed(encoder, torch.zeros(5, 3, 8, 8, dtype=torch.uint8), projection=True)
    assert rows.shape == (len(ids), encoder.feature_dim) and z.shape[0] == 5 and isinstance(rows, np.ndarray)


@pytest.mark.parametrize("split", ["pretrain", "test"])
def test_embed_command_on_images_in_memory(digits, tmp_path, split):
    _, _, ckpt = digits
    with device_outputs():
        res = last_json(cli("embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.npy"), "--split", split))
    assert res["count"] == np.load(tmp_path / "e.npy").shape[0]


def test_embed_command_on_files(photos, tmp_path):
    root, ckpt = photos
    with device_outputs():
        res = last_json(cli("embed", "--checkpoint", str(ckpt), "--out", str(tmp_path / "e.npy"), "--batch-size", "4"))
    assert res["count"] == 18 == np.load(tmp_path / "e.npy").shape[0]


def test_embed_command_on_shards(photos, tmp_path):
    pytest.importorskip("webdataset", reason="shards need pip install 'fastclr[shards]'")
    root, ckpt = photos
    last_json(cli("prepare", str(root), "--format", "shards", "--out", str(tmp_path / "sh"), "--shard-size", "10"))
    with device_outputs():
        res = last_json(
            cli("embed", "--checkpoint", str(ckpt), "--data", f"shards:{tmp_path / 'sh'}", "--out", str(tmp_path / "e"))
        )
    assert res["count"] == 18  # the pretraining split: train


def test_knn_linear_finetune_distill(digits, tmp_path):
    _, folder, ckpt = digits
    with device_outputs():
        knn = last_json(cli("knn", "--checkpoint", str(ckpt), "--k", "1,5"))
        sgd = last_json(cli("linear", "--checkpoint", str(ckpt), "--epochs", "1", "--batch-size", "20"))
        feats = last_json(cli("linear", "--checkpoint", str(ckpt), "--features"))
        _, distilled = teacher_and_student(ckpt, folder, tmp_path)
    assert set(knn["knn"]) == {"1", "5"} and 0 <= sgd["top1"] <= 1 and 0 <= feats["top1"] <= 1
    assert 0 <= distilled["student_top1"] <= 1


def test_knn_and_linear_on_files(photos):
    _, ckpt = photos
    with device_outputs():
        knn = last_json(cli("knn", "--checkpoint", str(ckpt), "--k", "3"))
        feats = last_json(cli("linear", "--checkpoint", str(ckpt), "--features"))
    assert 0 <= knn["knn"]["3"] <= 1 and 0 <= feats["top1"] <= 1


def test_pretraining_its_end_of_run_evaluation_and_report(tmp_path, one_thread):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    sets = ["image_size=8", "batch_size=32", "max_images=128", "precision=fp32", "channels_last=false", "knn_k=5"]
    flags = [x for s in sets for x in ("--set", s)]
    with device_outputs():
        res = last_json(cli("pretrain", "--epochs", "1", "--out", str(out), "--set", "quality_every=1", *flags))
        page = last_json(cli("report", str(out)))
    assert {"knn_top1", "linear_top1", "label_free"} <= set(res["eval"]) and page


def test_text_commands(tiny_arch, tmp_path):
    from fastclr import config
    from fastclr.pipeline import pretrain_and_evaluate as pretrain
    from textkit import stsb_folder

    data = f"stsb:{stsb_folder(tmp_path / 'sts')}"
    values = dict(data=data, arch=tiny_arch, hf_random_init=True, max_length=16, batch_size=4, max_steps=2,
                  precision="fp32", device="cpu", workers=0, eval=False, out=str(tmp_path / "run"))  # fmt: skip
    pretrain(config.Config(**values))
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.pt")
    with device_outputs():
        sts = last_json(cli("sts", "--checkpoint", ckpt, "--split", "dev"))
        emb = last_json(cli("embed", "--checkpoint", ckpt, "--out", str(tmp_path / "e.npy"), "--batch-size", "3"))
        done = pretrain(config.Config(**{**values, "max_steps": 3, "eval": True, "eval_batch_size": 5}))
    assert -100 <= sts["spearman"] <= 100 and emb["count"] == len(json.loads((tmp_path / "e.ids.json").read_text()))
    assert "sts_spearman" in done["eval"]
