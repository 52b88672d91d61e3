"""Linear evaluation: the frozen encoder is bit-identical afterwards; the CLI's contract for both protocols."""

import pytest
import torch

from evalkit import (
    cli,
    cli_subprocess,
    digit_folder,
    last_json,
    make_checkpoint,
    one_line_error,
)
from fastclr.data import datasets
from fastclr.eval import linear, supervised
from fastclr.method.augment import eval_view
from fastclr.method.model import SimCLR


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return digit_folder(tmp_path_factory.mktemp("digits"))


@pytest.fixture(scope="module")
def ckpt(folder, tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("run") / "last.pt", str(folder))[0]


def _splits(folder):
    data = datasets.load(str(folder), 8)
    return data.train, data.test


def test_frozen_encoder_is_bit_identical(folder):
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True)
    train, test = _splits(folder)
    # control: one forward in train mode moves BN statistics, so the check below is not vacuous
    probe = SimCLR("resnet_mini", True)
    probe.load_state_dict(model.state_dict())
    probe.train()
    with torch.no_grad():
        probe.encode(eval_view(train.images[:8], 8))
    assert linear.changed(probe, linear.snapshot(model))

    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()  # the protocol must put it in eval mode itself
    result = linear.linear_eval(
        model,
        train,
        test,
        10,
        aug=supervised.crop_flip(8, 0.3, False),
        epochs=2,
        batch_size=32,
        lr=0.1,
        device=torch.device("cpu"),
    )
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k, v in before.items():
        assert torch.equal(v, after[k]), k  # parameters, running means/vars and batch counters
    assert 0 <= result["top1"] <= result["top5"] <= 1


def test_classifier_learns_on_frozen_features(folder):
    """The SGD protocol fits the train split: accuracy on it far above chance (10%)."""
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True)
    train, _ = _splits(folder)
    result = linear.linear_eval(
        model,
        train,
        train,
        10,
        aug=supervised.crop_flip(8, 0.9, False),
        epochs=15,
        batch_size=40,
        lr=1.0,
        device=torch.device("cpu"),
    )
    assert result["top1"] > 0.5


def test_cli_sgd_and_features(ckpt, folder):
    """Both protocols through the CLI fit the digits far above chance (10 classes: 0.1)."""
    sgd = last_json(
        cli(
            "linear",
            "--checkpoint",
            str(ckpt),
            "--epochs",
            "15",
            "--batch-size",
            "40",
            "--lr",
            "1.0",
            "--min-scale",
            "0.9",
        )
    )
    assert sgd["protocol"] == "sgd" and sgd["top1"] <= sgd["top5"]
    feats = last_json(cli("linear", "--checkpoint", str(ckpt), "--features", "--data", str(folder)))
    assert feats["protocol"] == "features" and feats["top1"] <= feats["top5"] and feats["l2"] > 0
    assert sgd["top1"] > 0.3
    assert feats["top1"] > 0.5


def test_cli_refuses_unlabelled_data(ckpt, tmp_path):
    from PIL import Image

    for i in range(4):
        Image.new("RGB", (8, 8), (i, i, i)).save(tmp_path / f"{i}.png")
    line = one_line_error(cli_subprocess("linear", "--checkpoint", str(ckpt), "--data", str(tmp_path)))
    assert "no labels" in line


def test_cli_refuses_a_foreign_checkpoint(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    line = one_line_error(cli("linear", "--checkpoint", str(tmp_path / "other.pt")))
    assert "not a fastclr checkpoint" in line


def test_sgd_protocol_uses_the_papers_views_not_the_pretraining_config(ckpt, folder, monkeypatch):
    """The checkpoint was pretrained with min_scale 0.3 and no flip; the probe still trains on 0.08-1 + flip."""
    seen = {}
    real_fit, real_predict = supervised.fit, supervised.predict

    def fit(*args, aug, **kw):
        seen["aug"] = aug
        return real_fit(*args, aug=aug, **kw)

    def predict(*args, crop=1.0, **kw):
        seen["crop"] = crop
        return real_predict(*args, crop=crop, **kw)

    monkeypatch.setattr(supervised, "fit", fit)
    monkeypatch.setattr(supervised, "predict", predict)
    out = linear.command(str(ckpt), str(folder), epochs=1, batch_size=40)
    assert (seen["aug"].min_scale, seen["aug"].flip, seen["aug"].color_strength) == (0.08, True, 0.0)
    assert seen["crop"] == 1.0 and out["crop"] == 1.0  # 8 px images: evaluated whole
    linear.command(str(ckpt), str(folder), epochs=1, batch_size=40, min_scale=0.5, flip=False, crop=0.75)
    assert (seen["aug"].min_scale, seen["aug"].flip, seen["crop"]) == (0.5, False, 0.75)


def test_eval_view_crop_proportion():
    """0.875 from 96 px up; the cropped view is the centre of the image resized to size / crop."""
    assert supervised.crop_proportion(224) == 0.875 and supervised.crop_proportion(96) == 0.875
    assert supervised.crop_proportion(32) == 1.0
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, 3, 64, 64), generator=g, dtype=torch.uint8)
    view = supervised.cropped_eval_view(images, 32, crop=0.5)  # resized to 32 / 0.5 = 64 (as is), centre 32 x 32
    assert view.shape == (2, 3, 32, 32)
    assert torch.allclose(view, eval_view(images[..., 16:48, 16:48], 32))
    assert torch.equal(supervised.cropped_eval_view(images, 32), eval_view(images, 32))  # crop 1: the whole image


def test_cli_protocol_flags(ckpt, folder):
    out = last_json(
        cli(
            "linear",
            "--checkpoint",
            str(ckpt),
            "--epochs",
            "1",
            "--batch-size",
            "40",
            "--min-scale",
            "0.3",
            "--no-flip",
        )
    )
    assert (out["min_scale"], out["flip"], out["crop"]) == (0.3, False, 1.0)
    line = one_line_error(cli("linear", "--checkpoint", str(ckpt), "--crop-proportion", "1.5"))
    assert "--crop-proportion" in line
