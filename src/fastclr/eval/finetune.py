"""Semi-supervised fine-tuning on a class-balanced fraction of the labels.

SimCLR v1 Appendix B.5 and SimCLRv2 (arXiv 2006.10029) section 2: the whole encoder (and, with
``from_head_layer=1``, the first layer of the projection head, SimCLRv2's "fine-tuning from a
middle layer of the projection head") is trained with a new linear classifier on 1% or 10% of
the labels: Nesterov SGD, learning rate 0.05 x B/256, no warm-up, no weight decay, random crop
and flip only; 60 epochs for 1%, 30 for 10%. The labelled subset is class-balanced and chosen
deterministically by the seed; its file list is saved next to the result.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from fastclr import config, log
from fastclr.data.sets import ImageSet
from fastclr.data.subsets import balanced_indices
from fastclr.errors import UserError, require_fraction, require_positive
from fastclr.eval import supervised
from fastclr.method.augment import AugmentConfig
from fastclr.method.model import SimCLR
from fastclr.train import checkpoint, restore


def check_head_layer(net: SimCLR, from_head_layer: int) -> None:
    """UserError unless ``from_head_layer`` is 0 (h) to the head's layer count."""
    if not 0 <= from_head_layer <= len(net.head.layers):
        raise UserError(
            f"--from-head-layer {from_head_layer}: the head has {len(net.head.layers)} layers; use 0 (h) to "
            f"{len(net.head.layers)}"
        )


class Classifier(nn.Module):
    """Encoder f, optionally the first ``from_head_layer`` layers of g, then a linear layer.

    Args:
        net: the SimCLR network whose encoder (and head layers) the classifier reuses.
        num_classes: outputs of the linear layer.
        from_head_layer: 0 classifies h (v1); k >= 1 classifies the output of g's first k layers (v2).
    """

    def __init__(self, net: SimCLR, num_classes: int, from_head_layer: int = 0):
        super().__init__()
        check_head_layer(net, from_head_layer)
        self.net = net
        self.from_head_layer = from_head_layer
        width = net.feature_dim if from_head_layer == 0 else net.head.width(from_head_layer)
        self.fc = nn.Linear(width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 3, S, S] -> the representation the classifier reads, [N, width]."""
        h = self.net.encode(x)
        return self.net.head(h.float(), upto=self.from_head_layer) if self.from_head_layer else h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits [N, num_classes]."""
        return self.fc(self.features(x).float())

    def trainable(self) -> list[nn.Parameter]:
        """The encoder, the head layers in use, and the classifier (the rest of g is dropped)."""
        used = list(self.net.encoder.parameters()) + list(self.fc.parameters())
        for layer in self.net.head.layers[: self.from_head_layer]:
            used += list(layer.parameters())
        return used


def label_subset(labels: torch.Tensor, fraction: float, seed: int) -> torch.Tensor:
    """Sorted indices of a class-balanced subset holding ``fraction`` of the labels.

    round(fraction * N) examples (at least one per class), drawn by :func:`fastclr.data.subsets.balanced_indices`.
    """
    require_fraction("label_fraction", fraction, hint=", e.g. 0.01 or 0.1")
    if fraction == 1:
        return torch.arange(labels.shape[0])
    count = max(len(labels.unique()), round(fraction * labels.shape[0]))
    return balanced_indices(labels, count, seed)


def fit_classifier(
    model: SimCLR,
    train: ImageSet,
    test: ImageSet,
    num_classes: int,
    recipe: supervised.Recipe,
    from_head_layer: int = 0,
) -> tuple[Classifier, dict[str, float]]:
    """Fine-tune encoder (+ head layers) + a new linear layer on ``train``; top1/top5 on ``test``.

    The new layer starts at zero (the reference code's supervised head for fine-tuning is zero-initialised).
    """
    clf = Classifier(model, num_classes, from_head_layer).to(recipe.device)
    nn.init.zeros_(clf.fc.weight)
    nn.init.zeros_(clf.fc.bias)
    for p in clf.parameters():
        p.requires_grad_(True)
    clf.train()
    assert train.labels is not None, "fine-tuning needs labelled splits"
    loss = supervised.cross_entropy(train.labels.to(recipe.device))
    recipe.fit(clf, clf.trainable(), train.images, loss, desc="finetune")
    clf.eval()
    return clf, recipe.test(clf, test)


def finetune(
    model: SimCLR,
    train: ImageSet,
    test: ImageSet,
    num_classes: int,
    *,
    aug: AugmentConfig,
    from_head_layer: int = 0,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
) -> tuple[Classifier, dict[str, float]]:
    """:func:`fit_classifier` with these settings (the papers' by default)."""
    recipe = supervised.Recipe(aug, epochs, batch_size, lr, seed, device, precision)
    return fit_classifier(model, train, test, num_classes, recipe, from_head_layer)


def save_classifier(path: Path, clf: Classifier, cfg: config.Config, classes: list[str] | None, extra: dict) -> None:
    """A fastclr checkpoint that also holds the classifier: ``model`` stays readable by every command."""
    checkpoint.save(
        {
            "format": checkpoint.FORMAT,
            "version": checkpoint.VERSION,
            "kind": "classifier",
            "config": config.to_dict(cfg),
            "model": clf.net.state_dict(),
            "classifier": clf.fc.state_dict(),
            "from_head_layer": clf.from_head_layer,
            "num_classes": clf.fc.out_features,
            "classes": list(classes) if classes else [],
            **extra,
        },
        path,
    )


def load_classifier(path: str | Path, device: torch.device | str = "cpu") -> tuple[Classifier, config.Config, dict]:
    """Rebuild a fine-tuned (or distilled) classifier; UserError if the checkpoint has no classifier."""
    restored = restore.open_checkpoint(path, device)
    state = restored.state
    if state.get("kind") != "classifier" or not isinstance(state.get("classifier"), dict):
        raise UserError(
            f"checkpoint {path}: has no classifier; distil from the OUT/finetuned.pt that `fastclr finetune` writes"
        )
    clf = Classifier(restored.model, int(state["num_classes"]), int(state["from_head_layer"]))
    clf.fc.load_state_dict(state["classifier"])
    return clf.to(device), restored.cfg, state


def default_out(checkpoint: str, fraction: float) -> Path:
    """``RUN/finetune_F`` next to the checkpoint's run folder."""
    ckpt = Path(checkpoint)
    run = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run / f"finetune_{fraction:g}"


def default_epochs(fraction: float) -> int:
    """The papers' schedule: 60 epochs for up to 1% of the labels, else 30 (v1 Appendix B.5)."""
    return 60 if fraction <= 0.01 else 30


def labelled_subset(train: ImageSet, fraction: float, seed: int) -> ImageSet:
    """The class-balanced ``fraction`` of the train split (:func:`label_subset`) the classifier learns from."""
    assert train.labels is not None  # restore.labelled_splits checked it
    return train.subset(label_subset(train.labels, fraction, seed))


def output_folder(out: str | None, checkpoint: str, fraction: float, subset: ImageSet) -> Path:
    """The folder of the results (``out``, else :func:`default_out`), created, with labels.txt: the labelled files."""
    folder = Path(out) if out else default_out(checkpoint, fraction)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "labels.txt").write_text("".join(f"{i}\n" for i in subset.ids))
    return folder


def command(
    checkpoint: str,
    fraction: float,
    data: str | None = None,
    *,
    from_head_layer: int = 0,
    epochs: int | None = None,
    batch_size: int = 256,
    lr: float = 0.05,
    seed: int = 0,
    device: str | None = None,
    out: str | None = None,
    random_init: bool = False,
    init: str | None = None,
) -> dict:
    """``fastclr finetune``: label subset -> fine-tuned classifier -> test accuracy.

    Fine-tunes the encoder (and with ``from_head_layer`` 1 the head's first layer, as SimCLRv2) plus a
    new linear layer on a class-balanced, seeded ``fraction`` of the labels; Nesterov SGD, crop and flip
    only, no weight decay. Writes OUT/labels.txt (the labelled files) and OUT/finetuned.pt (a teacher
    for ``fastclr distill``). ``epochs`` None: :func:`default_epochs` (60 up to 1% of the labels, else 30).
    """
    epochs = default_epochs(fraction) if epochs is None else epochs
    require_positive(batch_size=batch_size, lr=lr, epochs=epochs)
    require_fraction("label_fraction", fraction, hint=", e.g. 0.01 or 0.1")
    opened = restore.open_labelled("finetune", checkpoint, data, device, random_init, seed, init)
    cfg, train = opened.restored.cfg, opened.train
    check_head_layer(opened.restored.model, from_head_layer)  # before any work or line on stderr
    subset = labelled_subset(train, fraction, seed)
    folder = output_folder(out, checkpoint, fraction, subset)
    log.info(
        f"finetune: {len(subset)} labelled images ({fraction:g} of {len(train)}), from head layer {from_head_layer}, "
        f"{epochs} epochs, {opened.device} {opened.precision}"
    )
    aug = supervised.crop_flip(cfg.image_size, cfg.min_scale, cfg.flip)
    recipe = supervised.Recipe(aug, epochs, batch_size, lr, seed, opened.device, opened.precision)
    model, test = opened.restored.model, opened.test
    clf, accuracy = fit_classifier(model, subset, test, train.num_classes, recipe, from_head_layer)
    ckpt = folder / "finetuned.pt"
    record = {"label_fraction": fraction, "label_ids": list(subset.ids), **accuracy, "seed": seed}
    save_classifier(ckpt, clf, cfg, train.classes, record)
    return {
        **accuracy,  # top1, top5
        "labelled": len(subset),
        "label_fraction": fraction,
        "from_head_layer": from_head_layer,
        "checkpoint": str(ckpt),
        "encoder": opened.restored.source,
    }
