"""Fine-tuning: label subsets are class-balanced and reproducible; what trains and what stays; the CLI contract."""

import pytest
import torch

from evalkit import cli, digit_folder, last_json, make_checkpoint, one_line_error
from fastclr.data import datasets
from fastclr.errors import UserError
from fastclr.eval import supervised
from fastclr.eval.finetune import Classifier, finetune, label_subset, load_classifier
from fastclr.method import augment
from fastclr.method.model import SimCLR


def _labels(counts):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])[
        torch.randperm(sum(counts), generator=torch.Generator().manual_seed(1))
    ]


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.37])
def test_subset_is_class_balanced(fraction):
    labels = _labels([500] * 10)
    pick = label_subset(labels, fraction, seed=0)
    count = max(10, round(fraction * 5000))
    assert len(pick) == count and len(pick.unique()) == count
    per = torch.bincount(labels[pick], minlength=10)
    assert per.max() - per.min() <= 1 and int(per.sum()) == count
    assert sorted(per.tolist(), reverse=True) == per.tolist()  # the remainder goes to the first classes
    assert torch.equal(pick, pick.sort().values)


def test_subset_is_reproducible_and_seeded():
    labels = _labels([120, 80, 100])
    a, b = label_subset(labels, 0.1, seed=3), label_subset(labels, 0.1, seed=3)
    assert torch.equal(a, b)
    assert not torch.equal(a, label_subset(labels, 0.1, seed=4))
    assert torch.equal(label_subset(labels, 1.0, seed=0), torch.arange(300))
    assert len(label_subset(labels, 1e-6, seed=0)) == 3  # at least one example per class


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_outside_unit_interval_is_refused(fraction):
    with pytest.raises(UserError):
        label_subset(torch.zeros(10, dtype=torch.long), fraction, 0)


def test_from_head_layer_trains_that_layer_only(tmp_path):
    data = datasets.load(str(digit_folder(tmp_path, 6, 2)), 8)
    torch.manual_seed(0)
    model = SimCLR("resnet_mini", True, head_layers=3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    clf, acc = finetune(
        model,
        data.train,
        data.test,
        10,
        aug=supervised.crop_flip(8, 0.3, False),
        from_head_layer=1,
        epochs=1,
        batch_size=30,
        lr=0.5,
    )
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder.") for k in moved)
    assert any(k.startswith("head.layers.0.") for k in moved)
    assert not any(k.startswith(("head.layers.1.", "head.layers.2.")) for k in moved)  # dropped part of g
    assert clf.fc.in_features == model.head.width(1)
    # the reported accuracy is the classifier's on the whole test images, recomputed here by hand
    with torch.no_grad():
        logits = clf.eval()(augment.eval_view(data.test.images, 8))
    top1 = (logits.argmax(1) == data.test.labels).float().mean().item()
    top5 = (logits.topk(5, dim=1).indices == data.test.labels[:, None]).any(1).float().mean().item()
    assert (acc["top1"], acc["top5"]) == pytest.approx((top1, top5))


def test_cli_writes_balanced_file_list_and_a_teacher(tmp_path):
    folder = digit_folder(tmp_path / "data", 10, 3)
    ckpt, _ = make_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt", str(folder))
    out = tmp_path / "ft"
    res = last_json(
        cli("finetune", "--checkpoint", str(ckpt), "--label-fraction", "0.2", "--epochs", "1", "--out", str(out))
    )
    assert res["labelled"] == 20 and 0 <= res["top1"] <= res["top5"] <= 1
    files = (out / "labels.txt").read_text().splitlines()
    assert len(files) == 20 and len(set(files)) == 20
    assert sorted(f.split("/")[-2] for f in files) == sorted([str(c) for c in range(10)] * 2)  # two per class
    again = tmp_path / "ft2"
    last_json(
        cli("finetune", "--checkpoint", str(ckpt), "--label-fraction", "0.2", "--epochs", "1", "--out", str(again))
    )
    assert (again / "labels.txt").read_text() == (out / "labels.txt").read_text()
    clf, _, state = load_classifier(out / "finetuned.pt")
    assert isinstance(clf, Classifier) and state["label_ids"] == files
    data = datasets.load(str(folder), 8)
    logits = supervised.predict(clf.eval(), data.test.images, 8, torch.device("cpu"))
    assert supervised.accuracy(logits, data.test.labels)["top1"] == pytest.approx(res["top1"])


def test_cli_fraction_out_of_range(tmp_path):
    ckpt, _ = make_checkpoint(tmp_path / "last.pt", "digits")
    assert "(0, 1]" in one_line_error(cli("finetune", "--checkpoint", str(ckpt), "--label-fraction", "1.5"))


def test_cli_from_head_layer_classifies_the_heads_first_layer(tmp_path):
    """``finetune --from-head-layer 1`` (SimCLRv2): the saved classifier reads g's first layer (its width), that
    layer and the encoder trained, the rest of g as the checkpoint had it; the reported accuracy is the saved
    classifier's on the test images; a layer the head lacks exits 2 with its error."""
    from fastclr.train import checkpoint

    folder = digit_folder(tmp_path / "data", 6, 2)
    ckpt, model = make_checkpoint(tmp_path / "last.pt", str(folder), head_layers=3, head_hidden=24, proj_dim=16)
    res = last_json(
        cli(
            "finetune",
            "--checkpoint",
            str(ckpt),
            "--label-fraction",
            "1",
            "--epochs",
            "1",
            "--from-head-layer",
            "1",
            "--out",
            str(tmp_path / "ft"),
        )  # fmt: skip
    )
    clf, _, state = load_classifier(tmp_path / "ft" / "finetuned.pt")
    assert clf.from_head_layer == state["from_head_layer"] == res["from_head_layer"] == 1
    assert clf.fc.in_features == model.head.width(1) == 24 != model.feature_dim
    before = checkpoint.load(ckpt)["model"]
    after = clf.net.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("encoder.") for k in moved) and any(k.startswith("head.layers.0.") for k in moved)
    assert not any(k.startswith(("head.layers.1.", "head.layers.2.")) for k in moved)
    data = datasets.load(str(folder), 8)
    logits = supervised.predict(clf.eval(), data.test.images, 8, torch.device("cpu"))
    assert supervised.accuracy(logits, data.test.labels)["top1"] == pytest.approx(res["top1"])
    with torch.no_grad():  # the classifier's input is g's first layer of h, not h
        x = augment.eval_view(data.test.images[:4], 8)
        h = clf.net.encode(x)
        assert torch.allclose(clf(x), clf.fc(clf.net.head(h.float(), upto=1)), atol=1e-5)
    flags = ("--label-fraction", "1", "--epochs", "1", "--from-head-layer", "4", "--out", str(tmp_path / "x"))
    line = one_line_error(cli("finetune", "--checkpoint", str(ckpt), *flags))  # before any work: one line, exit 2
    assert line.startswith("fastclr: error: --from-head-layer 4: the head has 3 layers")
